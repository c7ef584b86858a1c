"""The ``ingest`` command line as users and cron jobs run it: ``python -m ingest …`` in a subprocess, against an
embedded fake Assets API served by the test's own event loop on loopback. Exit codes are the contract.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import orjson
import pytest

from ingest.fakeserver import FakeServer, FakeServerConfig, running_fake_server
from tests.helpers.cli import clean_env, run_cli
from tests.helpers.records import media_rows, media_url, read_results, write_csv, write_jsonl

pytestmark = pytest.mark.anyio


def run_args(manifest: Path, results: Path, server: FakeServer, *extra: str) -> list[str]:
    return [
        "run",
        str(manifest),
        "--results",
        str(results),
        "--base-url",
        server.url,
        "--concurrency",
        "4",
        "--rate",
        "500",
        *extra,
    ]


async def test_run_exits_0_when_every_item_succeeds(tmp_path: Path, fake_server: FakeServer) -> None:
    """``ingest run MANIFEST --results --base-url --concurrency --rate`` uploads everything and exits 0."""
    manifest = write_csv(tmp_path / "media.csv", media_rows(12, prompt="a fox"))
    results = tmp_path / "out" / "results.jsonl"

    done = await run_cli(*run_args(manifest, results, fake_server))

    assert done.returncode == 0, done.stderr
    records = read_results(results)
    assert len(records) == 12
    assert {record["status"] for record in records} == {"succeeded"}
    assert fake_server.ledger.stats()["created"] == 12
    summary = done.event("run.summary")
    assert summary["exit_code"] == 0
    assert summary["succeeded"] == 12
    assert "12 succeeded" in done.stderr


async def test_run_exits_1_with_invalid_rows(tmp_path: Path, fake_server: FakeServer) -> None:
    """A run that finishes with invalid rows exits 1, after uploading the valid ones."""
    manifest = write_jsonl(tmp_path / "media.jsonl", [*media_rows(3), {"url": "ftp://nope/x.png", "type": "image"}])
    results = tmp_path / "results.jsonl"

    done = await run_cli(*run_args(manifest, results, fake_server))

    assert done.returncode == 1, done.stderr
    statuses = sorted(record["status"] for record in read_results(results))
    assert statuses == ["invalid", "succeeded", "succeeded", "succeeded"]
    assert fake_server.ledger.stats()["created"] == 3


async def test_no_api_key_is_a_usage_error_and_sends_nothing(tmp_path: Path, fake_server: FakeServer) -> None:
    """Without FAL_KEY (or FAL_KEY_ID + FAL_KEY_SECRET) the run exits 2 before sending anything."""
    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(3))

    done = await run_cli(*run_args(manifest, tmp_path / "results.jsonl", fake_server), env=clean_env())

    assert done.returncode == 2
    assert "FAL_KEY" in done.stderr
    assert fake_server.ledger.stats()["requests"] == 0


async def test_half_a_key_pair_is_a_usage_error(tmp_path: Path, fake_server: FakeServer) -> None:
    """FAL_KEY_ID without FAL_KEY_SECRET is exit 2 naming the missing variable; nothing is sent."""
    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(3))

    done = await run_cli(
        *run_args(manifest, tmp_path / "results.jsonl", fake_server), env=clean_env(FAL_KEY_ID="some-id")
    )

    assert done.returncode == 2
    assert "FAL_KEY_SECRET" in done.stderr
    assert fake_server.ledger.stats()["requests"] == 0


async def test_missing_manifest_is_a_usage_error(tmp_path: Path, fake_server: FakeServer) -> None:
    """A manifest path that does not exist is exit 2 naming the file; nothing is sent."""
    missing = tmp_path / "nowhere.csv"

    done = await run_cli(*run_args(missing, tmp_path / "results.jsonl", fake_server))

    assert done.returncode == 2
    assert "nowhere.csv" in done.stderr
    assert fake_server.ledger.stats()["requests"] == 0


async def test_unknown_config_setting_names_file_and_key(tmp_path: Path, fake_server: FakeServer) -> None:
    """An unknown key in a ``--config`` TOML file is exit 2, with the file and the key in the message."""
    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(2))
    config = tmp_path / "nightly.toml"
    config.write_text("rate = 5\nconcurency = 8\n")

    done = await run_cli(*run_args(manifest, tmp_path / "results.jsonl", fake_server, "--config", str(config)))

    assert done.returncode == 2
    assert "nightly.toml" in done.stderr
    assert "concurency" in done.stderr
    assert "unknown setting" in done.stderr
    assert fake_server.ledger.stats()["requests"] == 0


async def test_plain_http_to_a_remote_host_is_refused(tmp_path: Path) -> None:
    """``http://`` to a non-loopback host is exit 2 unless --allow-insecure-http (checked before connecting)."""
    # Only an invalid row: even if the check were missing, no request could go to that address.
    manifest = write_jsonl(tmp_path / "media.jsonl", [{"url": "ftp://nope/x.png", "type": "image"}])
    results = tmp_path / "results.jsonl"

    done = await run_cli("run", str(manifest), "--results", str(results), "--base-url", "http://10.255.255.1/v1")

    assert done.returncode == 2
    assert "refusing" in done.stderr
    assert "10.255.255.1" in done.stderr
    assert not results.exists()


async def test_key_id_and_secret_are_sent_as_one_key(tmp_path: Path) -> None:
    """FAL_KEY_ID + FAL_KEY_SECRET authenticate as ``Key id:secret``."""
    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(3))
    results = tmp_path / "results.jsonl"
    async with running_fake_server(FakeServerConfig(api_key="key-id-1:key-secret-1")) as server:
        env = clean_env(FAL_KEY_ID="key-id-1", FAL_KEY_SECRET="key-secret-1")
        done = await run_cli(*run_args(manifest, results, server), env=env)
        stats = server.ledger.stats()

    assert done.returncode == 0, done.stderr
    assert stats["created"] == 3
    assert stats["auth_failures"] == 0


async def test_rate_precedence_flag_over_env_over_config(tmp_path: Path, fake_server: FakeServer) -> None:
    """``--rate`` beats ``INGEST_RATE``, which beats the config file's ``rate`` (seen in ``run.started``)."""
    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(2))
    config = tmp_path / "settings.toml"
    config.write_text("rate = 321\n")
    base = [
        "run",
        str(manifest),
        "--results",
        str(tmp_path / "results.jsonl"),
        "--base-url",
        fake_server.url,
        "--config",
        str(config),
        "--log-format",
        "json",
    ]

    from_file = await run_cli(*base)
    from_env = await run_cli(*base, env=clean_env(FAL_KEY="fake-key", INGEST_RATE="777"))
    from_flag = await run_cli(*base, "--rate", "555", env=clean_env(FAL_KEY="fake-key", INGEST_RATE="777"))

    assert [done.returncode for done in (from_file, from_env, from_flag)] == [0, 0, 0]
    assert from_file.event("run.started")["rate"] == 321
    assert from_env.event("run.started")["rate"] == 777
    assert from_flag.event("run.started")["rate"] == 555


async def test_bad_env_setting_names_the_variable(tmp_path: Path, fake_server: FakeServer) -> None:
    """A malformed ``INGEST_*`` value is exit 2 naming the variable; nothing is sent."""
    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(2))

    done = await run_cli(
        *run_args(manifest, tmp_path / "results.jsonl", fake_server)[:-2],  # no --rate flag
        env=clean_env(FAL_KEY="fake-key", INGEST_RATE="fast"),
    )

    assert done.returncode == 2
    assert "INGEST_RATE" in done.stderr
    assert fake_server.ledger.stats()["requests"] == 0


# -- validate, help, demo -------------------------------------------------------------------------------------


async def test_validate_counts_rows_and_names_lines(tmp_path: Path) -> None:
    """``ingest validate`` prints valid/invalid/duplicate counts and each problem's file:line, exit 1."""
    manifest = write_jsonl(
        tmp_path / "media.jsonl",
        [
            {"url": media_url(1), "type": "image"},
            {"url": media_url(2), "type": "image", "favorite": "yes"},
            {"url": media_url(1), "type": "image"},
            {"url": media_url(4), "type": "image"},
            "[1, 2]",
        ],
    )

    done = await run_cli("validate", str(manifest))

    assert done.returncode == 1
    assert "5 rows: 2 valid, 2 invalid, 1 duplicate" in done.stdout
    assert f"{manifest}:2: field 'favorite'" in done.stdout
    assert f"{manifest}:5:" in done.stdout


async def test_validate_clean_manifest_exits_0(tmp_path: Path) -> None:
    """``ingest validate`` on a clean manifest says so and exits 0, without any API key."""
    manifest = write_csv(tmp_path / "media.csv", media_rows(4))

    done = await run_cli("validate", str(manifest), env=clean_env())

    assert done.returncode == 0
    assert "4 rows: 4 valid, 0 invalid, 0 duplicate" in done.stdout


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["validate", "--help"]], ids=" ".join)
async def test_help_exits_0(args: list[str]) -> None:
    """``--help`` prints usage and exits 0."""
    done = await run_cli(*args, env=clean_env())

    assert done.returncode == 0
    assert "usage: ingest" in done.stdout


async def test_run_help_lists_the_documented_flags() -> None:
    """``ingest run --help`` documents the flags docs/design.md promises."""
    done = await run_cli("run", "--help", env=clean_env())

    for flag in ("--results", "--config", "--base-url", "--concurrency", "--rate", "--retry-failed"):
        assert flag in done.stdout


@pytest.mark.slow
async def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    """``python -m ingest demo`` passes on its own fake server and its rerun sends zero requests."""
    done = await run_cli("demo", "--dir", str(tmp_path / "demo"), env=clean_env())

    assert done.returncode == 0, done.stdout + done.stderr
    assert "server received 0 upload requests during the rerun" in done.stdout
    assert "demo passed" in done.stdout
    assert (tmp_path / "demo" / "results.jsonl").exists()


@pytest.mark.anyio
async def test_the_console_scripts_quick_exit_keeps_every_byte_and_the_exit_code(tmp_path: Path) -> None:
    """``python -m ingest`` ends with ``os._exit`` (no interpreter teardown): what it wrote is all there. 20,000
    invalid rows are recorded (exit 1, nothing sent: the API is a closed port) and exported to a pipe whole."""
    rows = 20_000
    manifest = write_jsonl(tmp_path / "bad.jsonl", [{"url": f"not a url {i}"} for i in range(rows)])
    results = tmp_path / "bad.results.jsonl"
    done = await run_cli("run", str(manifest), "--results", str(results), "--base-url", "http://127.0.0.1:9/v1")
    assert done.returncode == 1, done.stderr[-2000:]
    assert sum(r.get("status") == "invalid" for r in read_results(results)) == rows
    exported = await run_cli("failed", "--include-invalid", str(results))
    assert exported.returncode == 0, exported.stderr[-2000:]
    lines = exported.stdout.splitlines()
    assert len(lines) == rows and orjson.loads(lines[-1])["url"] == f"not a url {rows - 1}"


@pytest.mark.anyio
async def test_the_console_script_runs_exit_handlers_before_its_quick_exit(tmp_path: Path) -> None:
    """Handlers registered with ``atexit`` (logging's, thread pools', a library's) still run."""
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('handler ran', file=sys.stderr))\n"
        "sys.argv = ['ingest', 'validate', sys.argv[1]]\n"
        "from ingest.entry import console\n"
        "console()\n"
    )
    manifest = write_jsonl(tmp_path / "m.jsonl", media_rows(3))
    with anyio.fail_after(60):
        done = await anyio.run_process([sys.executable, "-c", code, str(manifest)], env=clean_env(), check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr.decode().rstrip().endswith("handler ran")


@pytest.mark.anyio
async def test_the_console_script_does_not_import_rich_unless_it_draws_the_bar(tmp_path: Path) -> None:
    """structlog imports rich (attrs, pygments) whenever it is installed, ~50 ms of every start-up: the console
    script imports structlog with rich hidden, and rich comes only with the progress bar."""
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('rich imported:', 'rich' in sys.modules, file=sys.stderr))\n"
        "sys.argv = ['ingest', *sys.argv[1:]]\n"
        "from ingest.entry import console\n"
        "console()\n"
    )
    manifest = write_jsonl(tmp_path / "m.jsonl", media_rows(3))
    results = tmp_path / "results.jsonl"
    argv = ["run", str(manifest), "--results", str(results), "--base-url", "http://127.0.0.1:9/v1", "--progress", "log"]
    for args in (["validate", str(manifest)], argv):
        with anyio.fail_after(60):
            done = await anyio.run_process([sys.executable, "-c", code, *args], env=clean_env(FAL_KEY="k"), check=False)
        assert done.stderr.decode().rstrip().endswith("rich imported: False"), done.stderr.decode()[-2000:]
