"""Failing fast on the common set-up mistakes, through the real CLI against servers on loopback: a base URL that is
not the API root, a server that is not running, a rejected key, and environment variables that are not ours."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import anyio
import orjson
import pytest

from ingest.fakeserver import FakeServer, FakeServerConfig, running_fake_server
from tests.helpers import KEY
from tests.helpers.cli import clean_env, run_cli
from tests.helpers.net import free_port
from tests.helpers.records import media_rows, read_results, write_jsonl

pytestmark = pytest.mark.anyio


def run_args(manifest: Path, results: Path, base_url: str, *extra: str) -> list[str]:
    return ["run", str(manifest), "--results", str(results), "--base-url", base_url, "--rate", "500", *extra]


async def test_fake_server_answers_an_empty_json_body_with_422(fake_server: FakeServer) -> None:
    """The probe's body is valid JSON but not an upload: the fake, like the API, answers 422 and creates nothing."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Key {KEY}", "Content-Type": "application/json"}
        async with session.post(f"{fake_server.url}/assets/uploads", data=b"{}", headers=headers) as resp:
            assert resp.status == 422
            assert orjson.loads(await resp.read())["error"]["type"] == "validation_error"
    assert fake_server.ledger.stats()["created"] == 0


async def test_base_url_without_v1_stops_at_once_then_the_right_url_creates_everything(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """``--base-url`` without ``/v1`` stops within seconds after one request, records nothing, exit 4; the rerun with
    the right URL creates every item without ``--retry-failed``."""
    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(40))
    results = tmp_path / "results.jsonl"
    root = fake_server.url.removesuffix("/v1")

    started = time.monotonic()
    wrong = await run_cli(*run_args(manifest, results, root))
    took = time.monotonic() - started

    assert wrong.returncode == 4, wrong.stderr
    assert took < 15
    assert f"no upload endpoint at {root}/assets/uploads" in wrong.stderr
    assert "the base URL is the API root, e.g. https://api.fal.ai/v1" in wrong.stderr
    assert fake_server.ledger.stats()["requests"] <= 3
    assert not results.exists() or read_results(results) == []

    right = await run_cli(*run_args(manifest, results, fake_server.url))

    assert right.returncode == 0, right.stderr
    assert fake_server.ledger.stats()["created"] == 40
    assert {record["status"] for record in read_results(results) if "key" in record} == {"succeeded"}


async def test_base_url_with_the_upload_path_is_named_too(tmp_path: Path, fake_server: FakeServer) -> None:
    """``--base-url …/v1/assets/uploads`` (the whole endpoint) gets the same one line and exit 4."""
    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(5))
    done = await run_cli(*run_args(manifest, tmp_path / "r.jsonl", f"{fake_server.url}/assets/uploads"))
    assert done.returncode == 4, done.stderr
    assert "no upload endpoint at" in done.stderr
    assert fake_server.ledger.stats()["created"] == 0


async def test_unreachable_server_exits_4_within_a_minute_at_default_settings(tmp_path: Path) -> None:
    """Nothing listening at the base URL: exit 4 well within a minute, at the default settings, nothing recorded."""
    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(50))
    results = tmp_path / "results.jsonl"
    base_url = f"http://127.0.0.1:{free_port()}/v1"

    started = time.monotonic()
    done = await run_cli("run", str(manifest), "--results", str(results), "--base-url", base_url)
    took = time.monotonic() - started

    assert done.returncode == 4, done.stderr
    assert took < 60
    assert f"cannot reach {base_url}/assets/uploads" in done.stderr
    assert not results.exists() or read_results(results) == []


async def test_unreachable_server_without_preflight_stops_after_max_outage_leaving_items_pending(
    tmp_path: Path,
) -> None:
    """With ``--no-preflight``, the first connection failures are judged an outage: the run waits ``max_outage``,
    then exits 4 without recording any item as failed."""
    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(20))
    results = tmp_path / "results.jsonl"
    base_url = f"http://127.0.0.1:{free_port()}/v1"

    started = time.monotonic()
    done = await run_cli(
        *run_args(manifest, results, base_url, "--no-preflight", "--max-outage", "3", "--log-format", "json")
    )
    took = time.monotonic() - started

    assert done.returncode == 4, done.stderr
    assert took < 30
    assert done.event("service.outage")
    assert "max_outage" in done.event("service.unavailable")["problem"]
    assert [r for r in (read_results(results) if results.exists() else []) if r.get("status") == "failed"] == []


async def test_check_says_ok_and_exits_0_for_the_right_url_and_key(fake_server: FakeServer) -> None:
    """``ingest check`` sends the probe alone: exit 0 and one line when the endpoint and the key are right."""
    done = await run_cli("check", "--base-url", fake_server.url)
    assert done.returncode == 0, done.stderr
    assert "ingest: ok" in done.stderr and "HTTP 422" in done.stderr
    assert fake_server.ledger.stats()["created"] == 0


async def test_check_with_a_rejected_key_exits_3(fake_server: FakeServer) -> None:
    """A key the server rejects: ``ingest check`` exits 3 with one line saying so."""
    done = await run_cli("check", "--base-url", fake_server.url, env=clean_env(FAL_KEY="wrong-key"))
    assert done.returncode == 3, done.stderr
    assert "the API key was rejected" in done.stderr


async def test_run_with_a_rejected_key_stops_at_the_preflight(tmp_path: Path, fake_server: FakeServer) -> None:
    """A rejected key stops the run at the probe: exit 3, one request, nothing recorded."""
    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(30))
    results = tmp_path / "results.jsonl"
    done = await run_cli(*run_args(manifest, results, fake_server.url), env=clean_env(FAL_KEY="wrong-key"))
    assert done.returncode == 3, done.stderr
    assert fake_server.ledger.stats()["requests"] == 1
    assert not results.exists() or read_results(results) == []


async def test_no_preflight_sends_only_the_items(tmp_path: Path, fake_server: FakeServer) -> None:
    """``--no-preflight`` skips the probe: the server sees exactly one request per item."""
    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(10))
    done = await run_cli(*run_args(manifest, tmp_path / "r.jsonl", fake_server.url, "--no-preflight"))
    assert done.returncode == 0, done.stderr
    assert fake_server.ledger.stats()["requests"] == 10


async def test_kubernetes_service_variables_and_unrelated_ones_leave_a_run_working(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """The variables Kubernetes injects for a Service named ``ingest``, and an unrelated ``INGEST_CMD``, do not stop
    a run; only ``INGEST_CMD`` (and a typo, with its did-you-mean) get a warning."""
    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(6))
    env = clean_env(
        FAL_KEY=KEY,
        INGEST_SERVICE_HOST="10.0.0.7",
        INGEST_SERVICE_PORT="9090",
        INGEST_SERVICE_PORT_METRICS="9090",
        INGEST_PORT="tcp://10.0.0.7:9090",
        INGEST_PORT_9090_TCP="tcp://10.0.0.7:9090",
        INGEST_PORT_9090_TCP_ADDR="10.0.0.7",
        INGEST_PORT_9090_TCP_PORT="9090",
        INGEST_PORT_9090_TCP_PROTO="tcp",
        INGEST_CMD="run",
        INGEST_RAT="5",
    )
    done = await run_cli(*run_args(manifest, tmp_path / "r.jsonl", fake_server.url, "--log-format", "json"), env=env)

    assert done.returncode == 0, done.stderr
    assert fake_server.ledger.stats()["created"] == 6
    warnings = {e["variable"]: e for e in done.events() if e.get("event") == "settings.unknown_variable"}
    assert set(warnings) == {"INGEST_CMD", "INGEST_RAT"}
    assert warnings["INGEST_RAT"]["did_you_mean"] == "INGEST_RATE"


async def test_preflight_is_a_422_against_a_flaky_fake_and_the_run_goes_on(tmp_path: Path) -> None:
    """Faults do not touch the probe's answer (validation comes first): a flaky server still passes the preflight."""
    from ingest.fakeserver import load_profile

    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(20))
    async with running_fake_server(FakeServerConfig(faults=load_profile("flaky"))) as server:
        done = await run_cli(
            *run_args(manifest, tmp_path / "r.jsonl", server.url, "--backoff-initial", "0.02", "--log-format", "json")
        )
        assert done.returncode == 0, done.stderr
        assert done.event("preflight.ok")["status"] == 422
        assert server.ledger.stats()["created"] == 20


async def test_a_rerun_with_nothing_left_connects_to_nothing(tmp_path: Path, fake_server: FakeServer) -> None:
    """A rerun whose rows are all done sends no preflight and opens no connection: it exits 0 even with the server
    gone, and does not import the HTTP client at all (a third of a nightly no-op rerun's start-up)."""
    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(12))
    results = tmp_path / "results.jsonl"
    first = await run_cli(*run_args(manifest, results, fake_server.url))
    assert first.returncode == 0, first.stderr
    requests = fake_server.ledger.stats()["requests"]

    nobody = f"http://127.0.0.1:{free_port()}/v1"
    code = (
        "import sys\nfrom ingest.cli import main\n"
        f"rc = main({run_args(manifest, results, nobody)!r})\n"
        "print('aiohttp imported' if 'aiohttp' in sys.modules else 'aiohttp not imported')\nraise SystemExit(rc)\n"
    )
    with anyio.fail_after(60):
        again = await anyio.run_process([sys.executable, "-c", code], env=clean_env(FAL_KEY=KEY), check=False)

    assert again.returncode == 0, again.stderr.decode()
    assert again.stdout.decode().strip().endswith("aiohttp not imported")
    assert fake_server.ledger.stats()["requests"] == requests
    assert len(read_results(results)) == 12


async def test_invalid_rows_before_a_refused_preflight_are_recorded_and_nothing_else(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """The connection opens with the first row to send, so rows found invalid before it are recorded (true whatever
    the server says); a rejected key then stops the run with exit 3 and no item recorded as failed."""
    rows = [{"url": "not a url", "media_type": "image"}, *media_rows(5)]
    manifest = write_jsonl(tmp_path / "media.jsonl", rows)
    results = tmp_path / "results.jsonl"
    done = await run_cli(*run_args(manifest, results, fake_server.url), env=clean_env(FAL_KEY="wrong-key"))
    assert done.returncode == 3, done.stderr
    assert "the API key was rejected" in done.stderr
    assert fake_server.ledger.stats()["requests"] == 1
    assert {record["status"] for record in read_results(results)} <= {"invalid"}
