"""``ingest failed``: current failures as a manifest that ``ingest run`` takes unchanged, with their keys."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from ingest.commands.failed import manifest_row, write_failed_manifest
from ingest.commands.report import build_report
from ingest.credentials import ApiKey
from ingest.errors import UsageError
from ingest.fakeserver import FakeServer, FakeServerConfig, FaultConfig, running_fake_server
from ingest.manifest.source import ManifestSource, read_manifest
from ingest.results.record import Result, Status, error_dict
from ingest.run.pipeline import RunConfig, RunReport, run_pipeline
from ingest.upload.options import ClientOptions
from ingest.upload.retry import RetryPolicy
from tests.helpers.records import read_results

KEY = "fake-key"


def body(n: int, *, prefix: str = "t", **extra: Any) -> dict[str, Any]:
    """A canonical request body for item ``n`` (defaults left out, as the pipeline records them)."""
    return {"url": f"https://v3b.fal.media/files/b/{prefix}/{n:04d}.png", "type": "image", **extra}


def ok(key: str, line: int, *, manifest: str = "media.csv", when: str = "2026-03-01T10:00:00.000Z") -> Result:
    """A succeeded record."""
    return Result(
        key, manifest, line, Status.SUCCEEDED, body(line), attempts=1, http_status=201, run_id="r", finished_at=when
    )


def failed(
    key: str,
    line: int,
    *,
    manifest: str = "media.csv",
    status: int | None = 503,
    type_: str = "server_error",
    retryable: bool = True,
    item: dict[str, Any] | None = None,
    when: str = "2026-03-01T10:00:00.000Z",
) -> Result:
    """A failed record."""
    return Result(
        key,
        manifest,
        line,
        Status.FAILED,
        item if item is not None else body(line),
        attempts=2,
        http_status=status,
        error=error_dict(type_, "it went wrong", retryable=retryable),
        run_id="r",
        finished_at=when,
    )


def invalid(key: str | None, line: int, item: dict[str, Any] | None, *, manifest: str = "media.csv") -> Result:
    """An invalid record with the row's fields as read."""
    return Result(
        key,
        manifest,
        line,
        Status.INVALID,
        item,
        error=error_dict("invalid_row", "URL must have a host", retryable=False, field="url"),
        run_id="r",
        finished_at="2026-03-01T10:00:00.000Z",
    )


def write(path: Path, *records: Result) -> Path:
    """A results file holding ``records``."""
    path.write_bytes(b"".join(record.to_line() for record in records))
    return path


def lines_of(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file."""
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_only_current_failures_are_written_with_their_original_keys(tmp_path: Path) -> None:
    """An item that failed and later succeeded is left out; a failed one is written as its body plus its key."""
    results = write(
        tmp_path / "results.jsonl",
        failed("k1", 1),
        failed("k2", 2, item=body(2, prompt="a cat", tag_ids=["t1"])),
        ok("k3", 3),
        ok("k1", 1, when="2026-03-01T11:00:00.000Z"),
    )
    summary = write_failed_manifest([results], tmp_path / "rerun.jsonl")
    assert (summary.written, summary.skipped_no_item, dict(summary.by_error_type)) == (1, 0, {"server_error": 1})
    assert lines_of(tmp_path / "rerun.jsonl") == [
        {
            "url": body(2)["url"],
            "type": "image",
            "prompt": "a cat",
            "collection_id": None,
            "favorite": False,
            "tag_ids": ["t1"],
            "idempotency_key": "k2",
        }
    ]


def test_the_manifest_reads_back_as_valid_rows_with_the_same_bodies_and_keys(tmp_path: Path) -> None:
    """Round trip: ``read_manifest`` turns every written line into a valid row, same body, explicit key."""
    items = {
        "k-1": body(1),
        "k-2": body(2, prompt="sunset", collection_id="col-9", favorite=True, tag_ids=["a", "b"]),
        "k-3": body(3, type="video", url="https://v3b.fal.media/files/b/t/clip.mp4"),
    }
    records = [failed(key, n, item=item) for n, (key, item) in enumerate(items.items(), start=1)]
    out = tmp_path / "rerun.jsonl"
    write_failed_manifest([write(tmp_path / "results.jsonl", *records)], out)
    rows = list(read_manifest(ManifestSource.open(str(out))))
    assert [row.error for row in rows] == [None, None, None]
    assert {row.idempotency_key: row.request.body() for row in rows if row.request is not None} == items


def test_invalid_rows_are_written_as_read_only_when_asked(tmp_path: Path) -> None:
    """With include_invalid, invalid rows come out with their fields (CSV text typed), rows without fields counted."""
    results = write(
        tmp_path / "results.jsonl",
        failed("k1", 1),
        invalid(None, 2, {"url": "not-a-url", "type": "image", "favorite": "yes", "tag_ids": "a; b"}),
        invalid(None, 3, None),  # a line that could not be parsed at all
        invalid("own-key", 4, {"url": "https://", "idempotency_key": "own-key"}),
        invalid(None, 5, {"url": "x", "favorite": "yes"}, manifest="media.jsonl"),  # JSON: "yes" is the mistake
    )
    plain = write_failed_manifest([results], tmp_path / "failed.jsonl")
    assert plain.written == 1
    summary = write_failed_manifest([results], tmp_path / "all.jsonl", include_invalid=True)
    assert (summary.written, summary.skipped_no_item) == (4, 1)
    assert dict(summary.by_error_type) == {"server_error": 1, "invalid_row": 3}
    assert lines_of(tmp_path / "all.jsonl")[1:] == [
        {"url": "not-a-url", "type": "image", "favorite": True, "tag_ids": ["a", "b"]},
        {"url": "https://", "idempotency_key": "own-key"},
        {"url": "x", "favorite": "yes"},
    ]


def test_filters_by_error_type_http_status_and_retryability(tmp_path: Path) -> None:
    """Each filter keeps only matching failures (any of its values); filters combine; the rest is counted."""
    results = write(
        tmp_path / "results.jsonl",
        failed("k1", 1, status=503),
        failed("k2", 2, status=None, type_="timeout"),
        failed("k3", 3, status=422, type_="validation_error", retryable=False),
        failed("k4", 4, status=404, type_="not_found", retryable=False),
        invalid(None, 5, {"url": "x"}),
    )

    def keys(**filters: Any) -> list[str | None]:
        out = tmp_path / "rerun.jsonl"
        summary = write_failed_manifest([results], out, include_invalid=True, **filters)
        written = [row.get("idempotency_key") for row in lines_of(out)]
        assert summary.written + summary.filtered_out == 5
        return written

    assert keys(error_types={"validation_error", "not_found"}) == ["k3", "k4"]
    assert keys(http_statuses=[503, 404]) == ["k1", "k4"]
    assert keys(retryable_only=True) == ["k1", "k2"]
    assert keys(retryable_only=True, http_statuses=[503]) == ["k1"]
    assert keys(error_types=["invalid_row"]) == [None]


def test_order_is_by_manifest_then_line_across_shards(tmp_path: Path) -> None:
    """Lines from several shard files come out by manifest (in order of first appearance), then by line."""
    shard0 = write(tmp_path / "s0.jsonl", failed("a9", 9, manifest="b.csv"), failed("a2", 2, manifest="a.csv"))
    shard1 = write(tmp_path / "s1.jsonl", failed("b1", 1, manifest="b.csv"), failed("b7", 7, manifest="a.csv"))
    out = tmp_path / "rerun.jsonl"
    write_failed_manifest([shard0, shard1], out)
    first = [row["idempotency_key"] for row in lines_of(out)]
    assert first == ["b1", "a9", "a2", "b7"]
    write_failed_manifest([shard0, shard1], out)
    assert [row["idempotency_key"] for row in lines_of(out)] == first


def test_stdout_when_no_output_path(tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    """Without an output path the manifest goes to stdout."""
    summary = write_failed_manifest([write(tmp_path / "r.jsonl", failed("k1", 1))], None)
    assert summary.out == "<stdout>"
    assert orjson.loads(capsysbinary.readouterr().out)["idempotency_key"] == "k1"


def test_the_output_is_replaced_atomically_and_never_overwrites_a_results_file(tmp_path: Path) -> None:
    """An existing output is replaced whole with no temporary file left; a results file as output is refused."""
    results = write(tmp_path / "results.jsonl", failed("k1", 1))
    out = tmp_path / "rerun.jsonl"
    out.write_bytes(b'{"old": true}\n' * 100)
    write_failed_manifest([results], out)
    assert [row["idempotency_key"] for row in lines_of(out)] == ["k1"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["rerun.jsonl", "results.jsonl"]
    with pytest.raises(UsageError, match="is one of the results files"):
        write_failed_manifest([results], results)
    with pytest.raises(UsageError, match="cannot be written"):
        write_failed_manifest([results], tmp_path / "missing-dir" / "rerun.jsonl")
    with pytest.raises(UsageError, match="no such results file"):
        write_failed_manifest([tmp_path / "nope.jsonl"], out)


def test_a_torn_tail_is_ignored_and_counted(tmp_path: Path) -> None:
    """A results file cut mid-line still yields its complete failures."""
    results = write(tmp_path / "r.jsonl", failed("k1", 1))
    with results.open("ab") as file:
        file.write(failed("k2", 2).to_line()[:40])
    summary = write_failed_manifest([results], tmp_path / "rerun.jsonl")
    assert (summary.written, summary.torn_tails) == (1, 1)


# -- end to end, against the embedded fake server ---------------------------------------------------------


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """A JSONL manifest."""
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    return path


def config(manifest: Path, results: Path, server: FakeServer, *, max_attempts: int = 3) -> RunConfig:
    """A fast in-process run of ``manifest`` into ``results``."""
    return RunConfig(
        sources=[ManifestSource.open(str(manifest))],
        results_path=results,
        client=ClientOptions(base_url=server.url, concurrency=4, request_timeout=10.0, connect_timeout=5.0),
        rate=1000.0,
        policy=RetryPolicy(max_attempts=max_attempts, backoff_initial=0.01, backoff_max=0.05),
        progress_interval=60.0,
        seed=1,
    )


async def run(config: RunConfig) -> RunReport:
    """``run_pipeline`` with the fake key, bounded in time."""
    with anyio.fail_after(60):
        return await run_pipeline(config, ApiKey(KEY))


@pytest.mark.anyio
async def test_keys_reused_with_other_bodies_fail_and_come_back_as_a_manifest(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """Explicit keys reused with new bodies get 422 "payload changed": listed from that run's results, but not
    once the first run's results (where those keys succeeded) are read too, since a success is never undone."""
    first = [{**body(i), "idempotency_key": f"key-{i}"} for i in range(3)] + [body(i, prefix="x") for i in range(2)]
    second = [{**body(i, prefix="changed"), "idempotency_key": f"key-{i}"} for i in range(2)] + [body(9)]
    results_1, results_2 = tmp_path / "run1.results.jsonl", tmp_path / "run2.results.jsonl"
    await run(config(write_jsonl(tmp_path / "first.jsonl", first), results_1, fake_server))
    await run(config(write_jsonl(tmp_path / "second.jsonl", second), results_2, fake_server))

    out = tmp_path / "rerun.jsonl"
    summary = write_failed_manifest([results_2], out)
    assert (summary.written, dict(summary.by_error_type)) == (2, {"validation_error": 2})
    rows = list(read_manifest(ManifestSource.open(str(out))))
    assert [(row.idempotency_key, row.request.url if row.request else None) for row in rows] == [
        ("key-0", body(0, prefix="changed")["url"]),
        ("key-1", body(1, prefix="changed")["url"]),
    ]
    report = build_report([results_2])
    assert report.items == {"succeeded": 1, "failed": 2, "invalid": 0, "duplicate": 0}
    assert report.item_http == {"422": 2}
    assert report.failed_retryable == 0
    assert "payload changed" in report.groups[0].message
    # in the order the answers came (4 in flight): the same two lines either way
    assert sorted(report.groups[0].examples) == [f"{tmp_path / 'second.jsonl'}:1", f"{tmp_path / 'second.jsonl'}:2"]

    assert write_failed_manifest([results_2, results_1], out).written == 0
    both = build_report([results_2, results_1])
    assert both.records == {"succeeded": 6, "failed": 2, "invalid": 0, "duplicate": 0}
    assert both.items == {"succeeded": 6, "failed": 0, "invalid": 0, "duplicate": 0}
    assert both.record_errors == {"validation_error": 2}


@pytest.mark.anyio
async def test_retryable_failures_rerun_from_the_written_manifest_succeed_with_the_same_keys(tmp_path: Path) -> None:
    """Every item fails on a 5xx-only server; the written manifest, run on a healthy one, settles them all."""
    manifest = write_jsonl(tmp_path / "media.jsonl", [body(i) for i in range(6)])
    results = tmp_path / "results.jsonl"
    broken = FakeServerConfig(api_key=KEY, faults=FaultConfig(p_5xx=1.0, retry_after_s=0.0))
    async with running_fake_server(broken) as server:
        first = await run(config(manifest, results, server, max_attempts=1))
    assert first.stats.by_status["failed"] == 6

    rerun = tmp_path / "rerun.jsonl"
    summary = write_failed_manifest([results], rerun, retryable_only=True)
    assert summary.written == 6
    async with running_fake_server(FakeServerConfig(api_key=KEY)) as server:
        second = await run(config(rerun, results, server))
        assert server.ledger.stats()["created"] == 6
    assert second.stats.by_status["succeeded"] == 6

    report = build_report([results])
    assert report.records == {"succeeded": 6, "failed": 6, "invalid": 0, "duplicate": 0}
    assert report.items == {"succeeded": 6, "failed": 0, "invalid": 0, "duplicate": 0}
    assert len(report.runs) == 2
    assert report.latency.count == 6
    records = read_results(results)
    assert {r["key"] for r in records if r["status"] == "failed"} == {
        r["key"] for r in records if r["status"] == "succeeded"
    }
    assert write_failed_manifest([results], tmp_path / "again.jsonl").written == 0


def test_a_failed_relative_row_of_a_bucket_manifest_is_anchored_beside_it() -> None:
    """A failed ``media/a.png`` row of ``s3://lib/jobs/m.csv`` is rerun as ``s3://lib/jobs/media/a.png``, key kept."""
    record = {
        "status": "failed",
        "manifest": "s3://lib/jobs/m.csv",
        "line": 2,
        "key": "k1",
        "item": {"url": "media/a.png", "type": "image"},
    }
    row = manifest_row(record)
    assert row is not None and row["url"] == "s3://lib/jobs/media/a.png" and row["idempotency_key"] == "k1"
