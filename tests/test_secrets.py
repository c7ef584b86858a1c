"""The API key never leaves the process except in the ``Authorization`` header: not in logs (JSON or console, at
debug level), not in the results file, not in error messages — even when a server echoes the header back.

Each test runs the real CLI with a distinctive key against a real loopback server and greps everything the run
left behind (stdout, stderr, the results file and its lock file) for the key and for each of its parts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.fakeserver import FakeServerConfig, running_fake_server
from tests.helpers.cli import CliResult, clean_env, run_cli
from tests.helpers.pipeline import Hit, Reply, Script, error_body, scripted_server
from tests.helpers.records import media_rows, write_jsonl

pytestmark = pytest.mark.anyio

SECRET = "sk_live_Q7h2ZpX9mN4vR8tY3wK6"
KEY_ID = "kid_4Fq9Lm2Xc7Dd"
KEY_SECRET = "sec_Vb8Nz3Rt6Yw1Hp5J"


def leftovers(done: CliResult, results: Path) -> dict[str, str]:
    """Every place a run writes text: its output streams and the files beside the results."""
    texts = {"stdout": done.stdout, "stderr": done.stderr}
    for path in results.parent.glob(results.name + "*"):
        texts[path.name] = path.read_text(errors="replace")
    return texts


def assert_nowhere(texts: dict[str, str], *secrets: str) -> None:
    for secret in secrets:
        for where, text in texts.items():
            assert secret not in text, f"{secret!r} leaked into {where}"


def run_args(manifest: Path, results: Path, url: str, fmt: str) -> list[str]:
    return [
        "run",
        str(manifest),
        "--results",
        str(results),
        "--base-url",
        url,
        "--rate",
        "500",
        "--concurrency",
        "2",
        "--max-attempts",
        "2",
        "--log-level",
        "debug",
        "--log-format",
        fmt,
    ]


@pytest.mark.parametrize("fmt", ["json", "console"])
async def test_key_not_logged_on_success(tmp_path: Path, fmt: str) -> None:
    """A successful run, logging at debug level, never prints the key."""
    manifest = write_jsonl(tmp_path / "media.jsonl", [*media_rows(4), {"url": "bad", "type": "image"}])
    results = tmp_path / "results.jsonl"
    async with running_fake_server(FakeServerConfig(api_key=SECRET)) as server:
        done = await run_cli(*run_args(manifest, results, server.url, fmt), env=clean_env(FAL_KEY=SECRET))
        assert server.ledger.stats()["created"] == 4

    assert done.returncode == 1, done.stderr  # the invalid row
    assert "upload.succeeded" in done.stderr  # debug events were logged
    assert_nowhere(leftovers(done, results), SECRET)


@pytest.mark.parametrize("fmt", ["json", "console"])
async def test_key_not_logged_when_rejected(tmp_path: Path, fmt: str) -> None:
    """A run whose key is rejected (401) says so without printing the key."""
    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(4))
    results = tmp_path / "results.jsonl"
    async with running_fake_server(FakeServerConfig(api_key="another-key")) as server:
        done = await run_cli(*run_args(manifest, results, server.url, fmt), env=clean_env(FAL_KEY=SECRET))

    assert done.returncode == 3
    assert "auth.rejected" in done.stderr
    assert_nowhere(leftovers(done, results), SECRET)


@pytest.mark.parametrize("accepted", [True, False], ids=["accepted", "rejected"])
async def test_key_id_and_secret_not_logged(tmp_path: Path, accepted: bool) -> None:
    """With FAL_KEY_ID + FAL_KEY_SECRET, neither part nor the joined key is printed."""
    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(3))
    results = tmp_path / "results.jsonl"
    server_key = f"{KEY_ID}:{KEY_SECRET}" if accepted else "another-key"
    async with running_fake_server(FakeServerConfig(api_key=server_key)) as server:
        env = clean_env(FAL_KEY_ID=KEY_ID, FAL_KEY_SECRET=KEY_SECRET)
        done = await run_cli(*run_args(manifest, results, server.url, "json"), env=env)

    assert done.returncode == (0 if accepted else 3), done.stderr
    assert_nowhere(leftovers(done, results), f"{KEY_ID}:{KEY_SECRET}", KEY_ID, KEY_SECRET)


def echo(status: int) -> Script:
    """A script for a server that echoes the request's Authorization header in its error message."""

    def script(hit: Hit) -> Reply:
        return Reply(status, body=error_body(status, f"rejected request with Authorization: {hit.authorization}"))

    return script


async def echoed_run(tmp_path: Path, status: int) -> tuple[CliResult, Path]:
    """Run the CLI against a server that answers ``status`` echoing our Authorization header."""
    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(1))
    results = tmp_path / "results.jsonl"
    async with scripted_server(echo(status)) as server:
        done = await run_cli(*run_args(manifest, results, server.url, "json"), env=clean_env(FAL_KEY=SECRET))
        assert server.hits[0].authorization == f"Key {SECRET}"  # the key did go out, in the header
    return done, results


def log_lines(done: CliResult) -> dict[str, str]:
    """The structured log events only (JSON lines of stderr)."""
    return {"log events": "\n".join(line for line in done.stderr.splitlines() if line.startswith("{"))}


@pytest.mark.parametrize("status", [401, 422, 502])
async def test_key_echoed_by_a_server_is_redacted_from_log_events(tmp_path: Path, status: int) -> None:
    """A server (or proxy) echoing the Authorization header in an error does not get the key into log events."""
    done, _ = await echoed_run(tmp_path, status)

    assert done.returncode == (3 if status == 401 else 1)
    events = log_lines(done)
    assert "***" in events["log events"]  # the echoed key reached the logger and was masked
    assert_nowhere(events, SECRET)


async def test_key_echoed_by_a_401_is_not_printed_in_the_summary(tmp_path: Path) -> None:
    """The human summary printed after an aborted run does not repeat a key that the server echoed."""
    done, results = await echoed_run(tmp_path, 401)

    assert done.returncode == 3
    assert_nowhere(leftovers(done, results), SECRET)


@pytest.mark.parametrize("status", [422, 502])
async def test_key_echoed_in_an_item_error_stays_out_of_the_results_file(tmp_path: Path, status: int) -> None:
    """A server that echoes the Authorization header in an item's error does not put the key in results.jsonl."""
    done, results = await echoed_run(tmp_path, status)

    assert done.returncode == 1
    assert_nowhere({"results": results.read_text()}, SECRET)
