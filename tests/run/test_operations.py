"""Operating features: shards as real processes, Prometheus metrics, dry run, max duration, progress events."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import aiohttp
import anyio
import orjson
import pytest
from structlog.testing import capture_logs

from ingest.admission.keys import KeyDeriver
from ingest.admission.shard import Shard, parse_shard
from ingest.cli import main
from ingest.credentials import ApiKey
from ingest.fakeserver import FakeServer, FakeServerConfig, FaultConfig, running_fake_server
from ingest.manifest.source import ManifestSource
from ingest.run.pipeline import RunConfig, run_pipeline
from ingest.upload.options import ClientOptions
from tests.helpers.net import free_port
from tests.helpers.records import read_results

pytestmark = pytest.mark.anyio


def write_manifest(path: Path, count: int, *, start: int = 0) -> Path:
    """A JSONL manifest of `count` distinct valid items."""
    lines = [
        orjson.dumps({"url": f"https://v3b.fal.media/files/ops/{i:06d}.png", "type": "image", "prompt": f"p{i}"})
        for i in range(start, start + count)
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def config_for(server: FakeServer, manifest: Path, results: Path, **overrides: object) -> RunConfig:
    """A fast RunConfig against the fake server."""
    options: dict[str, object] = {
        "sources": [ManifestSource.open(str(manifest))],
        "results_path": results,
        "client": ClientOptions(base_url=server.url, concurrency=8, request_timeout=5),
        "rate": 2000.0,
    }
    options.update(overrides)
    return RunConfig(**options)  # type: ignore[arg-type]


def test_shard_assignment_partitions_keys() -> None:
    """Every key belongs to exactly one of N shards, and the split is roughly even."""
    keys = [KeyDeriver().derive({"url": f"https://a.fal.media/{i}.png"}) for i in range(4000)]
    owners = [[s for s in range(4) if Shard(s, 4).owns_key(k)] for k in keys]
    assert all(len(o) == 1 for o in owners)
    sizes = [sum(1 for o in owners if o == [s]) for s in range(4)]
    assert min(sizes) > 800


def test_parse_shard_forms() -> None:
    """K/N, /N with JOB_COMPLETION_INDEX, and clear errors for bad forms."""
    assert parse_shard("1/3") == Shard(1, 3)
    assert parse_shard("/3", env={"JOB_COMPLETION_INDEX": "2"}) == Shard(2, 3)
    assert parse_shard(None) is None
    for bad in ("3/3", "x/2", "/2"):
        with pytest.raises(Exception, match="shard"):
            parse_shard(bad, env={})


async def test_shard_processes_union_is_exactly_once(tmp_path: Path) -> None:
    """Three `ingest run --shard K/3` processes against one server create every item exactly once between them."""
    manifest = write_manifest(tmp_path / "m.jsonl", 600)
    async with running_fake_server(FakeServerConfig()) as server:
        env = {**os.environ, "FAL_KEY": "fake-key"}
        commands = [
            [
                sys.executable,
                "-m",
                "ingest",
                "run",
                str(manifest),
                "--results",
                str(tmp_path / "r-{shard}.jsonl"),
                "--base-url",
                server.url,
                "--rate",
                "3000",
                "--concurrency",
                "8",
                "--shard",
                f"{k}/3",
                "--log-format",
                "json",
            ]
            for k in range(3)
        ]
        codes: list[int] = []

        async def run(command: list[str]) -> None:
            result = await anyio.run_process(command, env=env, check=False)
            codes.append(result.returncode)

        with anyio.fail_after(90):
            async with anyio.create_task_group() as tg:
                for command in commands:
                    tg.start_soon(run, command)
        stats = server.ledger.stats()
    assert codes == [0, 0, 0]
    # One request per item, plus each process's preflight probe (an empty body, answered 422).
    assert stats["created"] == 600 and stats["duplicate_bodies"] == 0 and stats["requests"] == 600 + 3
    per_shard = [read_results(tmp_path / f"r-shard-{k}-of-3.jsonl") for k in range(3)]
    assert all(100 < len(records) < 300 for records in per_shard)
    keys = [r["key"] for records in per_shard for r in records]
    assert len(keys) == len(set(keys)) == 600


async def test_metrics_endpoint_and_textfile(tmp_path: Path) -> None:
    """While a run is going, /metrics answers with its counters; the textfile holds the final figures."""
    manifest = write_manifest(tmp_path / "m.jsonl", 40)
    textfile = tmp_path / "ingest.prom"
    faults = FaultConfig(base_latency_s=0.05)
    async with running_fake_server(FakeServerConfig(faults=faults)) as server:
        port = free_port()
        config = config_for(
            server, manifest, tmp_path / "r.jsonl", metrics_port=port, metrics_textfile=textfile, rate=100.0
        )
        scraped: list[str] = []

        async def scrape() -> None:
            async with aiohttp.ClientSession() as session:
                while not scraped:
                    try:
                        async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                            text = await resp.text()
                    except aiohttp.ClientConnectionError:
                        await anyio.sleep(0.02)
                        continue
                    if 'ingest_items_total{status="succeeded"}' in text:
                        scraped.append(text)
                    await anyio.sleep(0.02)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(scrape)
                report = await run_pipeline(config, ApiKey("fake-key"))
    assert report.exit_code == 0
    assert scraped and "ingest_requests_total" in scraped[0] and "ingest_rate_limit_configured 100.0" in scraped[0]
    final = textfile.read_text()
    assert 'ingest_items_total{status="succeeded"} 40.0' in final
    assert 'ingest_requests_total{http_status="201"} 40.0' in final
    assert "ingest_request_duration_seconds_bucket" in final


def test_dry_run_counts_without_sending(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`run --dry-run` counts new / done / duplicate / invalid against the results file and needs no key."""
    manifest = write_manifest(tmp_path / "m.jsonl", 10)
    with manifest.open("ab") as file:
        file.write(b'{"url": "https://v3b.fal.media/files/ops/000001.png", "type": "image", "prompt": "p1"}\n')
        file.write(b'{"url": "javascript:alert(1)", "type": "image"}\n')
    results = tmp_path / "r.jsonl"
    done_key = KeyDeriver().derive({"url": "https://v3b.fal.media/files/ops/000000.png"})
    from ingest.admission.keys import body_sha256
    from ingest.models import UploadRequest

    body = UploadRequest(url="https://v3b.fal.media/files/ops/000000.png", type="image", prompt="p0")
    results.write_bytes(
        orjson.dumps(
            {
                "key": done_key,
                "status": "succeeded",
                "body_sha256": body_sha256(body.body_bytes()),
                "manifest": "m",
                "line": 1,
            }
        )
        + b"\n"
    )
    env_key = os.environ.pop("FAL_KEY", None)
    try:
        code = main(["run", str(manifest), "--results", str(results), "--dry-run", "--rate", "2"])
    finally:
        if env_key is not None:
            os.environ["FAL_KEY"] = env_key
    out = capsys.readouterr().out
    assert code == 1  # one invalid row
    assert "new: 9" in out and "already done: 1" in out and "duplicate: 1" in out and "invalid: 1" in out
    assert "would send 9 items; at 2 requests/s that takes at least 0m05s" in out
    assert results.read_bytes().count(b"\n") == 1  # nothing written


async def test_max_duration_stops_taking_items(tmp_path: Path) -> None:
    """--max-duration stops the run after the time, leaving the rest pending for a rerun that completes it."""
    manifest = write_manifest(tmp_path / "m.jsonl", 200)
    async with running_fake_server(FakeServerConfig()) as server:
        results = tmp_path / "r.jsonl"
        with anyio.fail_after(30):
            first = await run_pipeline(
                config_for(server, manifest, results, rate=100.0, max_duration=0.5), ApiKey("fake-key")
            )
            done = first.stats.by_status["succeeded"]
            assert 10 < done < 200
            second = await run_pipeline(config_for(server, manifest, results), ApiKey("fake-key"))
        assert second.stats.by_status["succeeded"] == 200 - done
        assert server.ledger.stats()["created"] == 200


async def test_progress_log_events(tmp_path: Path) -> None:
    """With progress = log, run.progress events carry done/total, counts, rate, ETA and the limiter's figures."""
    manifest = write_manifest(tmp_path / "m.jsonl", 60)
    async with running_fake_server(FakeServerConfig()) as server:
        config = config_for(server, manifest, tmp_path / "r.jsonl", rate=60.0, progress_interval=0.2)
        with capture_logs() as logs, anyio.fail_after(30):
            await run_pipeline(config, ApiKey("fake-key"))
    events = [e for e in logs if e["event"] == "run.progress"]
    assert len(events) >= 2
    for key in (
        "done",
        "total",
        "succeeded",
        "failed",
        "invalid",
        "skipped",
        "rate",
        "eta_s",
        "effective_rate",
        "paused_s",
    ):
        assert key in events[-1]
    assert events[-1]["total"] == 60
    summary = next(e for e in logs if e["event"] == "run.summary")
    assert summary["succeeded"] == 60 and summary["exit_code"] == 0
