"""``ingest report``: records vs current items across runs and shards, aggregates, and both renderings."""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.commands import failed as rerun_module
from ingest.commands.report import LogHistogram, aggregate, build_report, histogram, render, render_json, render_text
from ingest.errors import UsageError
from ingest.results import scan
from ingest.results.record import Result, Status, error_dict


def at(minute: int, second: int = 0, hour: int = 10) -> str:
    """A ``finished_at`` on 2026-03-01 at ``hour:minute:second`` UTC."""
    return f"2026-03-01T{hour:02d}:{minute:02d}:{second:02d}.000Z"


def body(n: int) -> dict[str, Any]:
    """A request body for item ``n``."""
    return {"url": f"https://v3b.fal.media/files/b/t/{n:04d}.png", "type": "image"}


def ok(key: str, line: int, *, run: str = "run1", when: str = at(0), attempts: int = 1, elapsed: int = 100) -> Result:
    """A succeeded record."""
    return Result(
        key,
        "media.csv",
        line,
        Status.SUCCEEDED,
        body(line),
        body_sha256="ab" * 32,
        attempts=attempts,
        http_status=201,
        asset={"id": f"asset-{key}"},
        elapsed_ms=elapsed,
        run_id=run,
        finished_at=when,
    )


def failed(
    key: str,
    line: int,
    *,
    run: str = "run1",
    when: str = at(0),
    status: int = 503,
    type_: str = "server_error",
    message: str = "Service unavailable",
    retryable: bool = True,
    attempts: int = 3,
    manifest: str = "media.csv",
) -> Result:
    """A failed record."""
    return Result(
        key,
        manifest,
        line,
        Status.FAILED,
        body(line),
        body_sha256="cd" * 32,
        attempts=attempts,
        http_status=status,
        error=error_dict(type_, message, retryable=retryable, request_id="req-1"),
        elapsed_ms=5000,
        run_id=run,
        finished_at=when,
    )


def invalid(
    key: str | None,
    line: int,
    *,
    run: str = "run1",
    when: str = at(0),
    item: dict[str, Any] | None = None,
    type_: str = "invalid_row",
    message: str = "URL must have a host",
    duplicate_of: dict[str, Any] | None = None,
) -> Result:
    """An invalid record (no request was made)."""
    return Result(
        key,
        "media.csv",
        line,
        Status.INVALID,
        item,
        error=error_dict(type_, message, retryable=False, field="url"),
        duplicate_of=duplicate_of,
        run_id=run,
        finished_at=when,
    )


def duplicate(key: str, line: int, of_line: int, *, run: str = "run1", when: str = at(0)) -> Result:
    """A duplicate record: a second row with the same key and body."""
    return Result(
        key,
        "media.csv",
        line,
        Status.DUPLICATE,
        body(of_line),
        duplicate_of={"manifest": "media.csv", "line": of_line},
        run_id=run,
        finished_at=when,
    )


def write(path: Path, *records: Result | bytes) -> Path:
    """A results file holding ``records`` (``bytes`` are written verbatim)."""
    path.write_bytes(b"".join(r if isinstance(r, bytes) else r.to_line() for r in records))
    return path


def test_a_failure_then_a_success_on_a_rerun_is_one_succeeded_item(tmp_path: Path) -> None:
    """Records count every line; items keep the latest record per key, so a rerun's success replaces the failure."""
    path = write(
        tmp_path / "results.jsonl",
        failed("k1", 1, when=at(0)),
        ok("k2", 2, when=at(0)),
        failed("k3", 3, when=at(1), status=422, type_="validation_error", retryable=False),
        ok("k1", 1, run="run2", when=at(30)),
        failed("k3", 3, run="run2", when=at(30), status=422, type_="validation_error", retryable=False),
    )
    report = build_report([path])
    assert report.records == {"succeeded": 2, "failed": 3, "invalid": 0, "duplicate": 0}
    assert report.items == {"succeeded": 2, "failed": 1, "invalid": 0, "duplicate": 0}
    assert report.record_errors == {"server_error": 1, "validation_error": 2}
    assert report.item_errors == {"validation_error": 1}
    assert report.item_http == {"422": 1}
    assert report.record_http == {"201": 2, "422": 2, "503": 1}
    assert report.failed_retryable == 0
    assert [(run.run_id, run.records) for run in report.runs] == [("run1", 3), ("run2", 2)]


def test_a_success_is_never_undone_by_a_later_failure(tmp_path: Path) -> None:
    """Once an item succeeded, a later failed record for its key does not make it failed again."""
    path = write(tmp_path / "r.jsonl", ok("k1", 1, when=at(0)), failed("k1", 1, run="run2", when=at(5)))
    report = build_report([path])
    assert report.items["succeeded"] == 1
    assert report.items["failed"] == 0


def test_shards_are_summed_and_each_file_holds_its_items(tmp_path: Path) -> None:
    """Two shard files with disjoint keys: totals add up, and each file's items are the ones it decides."""
    shard0 = write(tmp_path / "shard-0.jsonl", ok("a1", 1), ok("a2", 3), failed("a3", 5))
    shard1 = write(tmp_path / "shard-1.jsonl", ok("b1", 2), invalid(None, 4))
    report = build_report([shard0, shard1])
    assert report.records == {"succeeded": 3, "failed": 1, "invalid": 1, "duplicate": 0}
    assert report.items == report.records
    assert [tally.path for tally in report.files] == [str(shard0), str(shard1)]
    assert report.files[0].items == {"succeeded": 2, "failed": 1}
    assert report.files[1].items == {"succeeded": 1, "invalid": 1}


def test_across_files_the_later_finished_at_wins_whatever_the_argument_order(tmp_path: Path) -> None:
    """A rerun's results file given before the first run's still decides the items it touched."""
    first = write(
        tmp_path / "run1.jsonl",
        failed("k1", 1, when=at(0)),
        failed("k2", 2, when=at(0), status=500, message="boom"),
    )
    second = write(
        tmp_path / "run2.jsonl",
        ok("k1", 1, run="run2", when=at(0, hour=11)),
        failed("k2", 2, run="run2", when=at(0, hour=11), status=422, type_="validation_error", retryable=False),
    )
    for order in ([first, second], [second, first]):
        report = build_report(order)
        assert report.items == {"succeeded": 1, "failed": 1, "invalid": 0, "duplicate": 0}
        assert report.item_errors == {"validation_error": 1}
        assert [run.run_id for run in report.runs] == ["run1", "run2"]


def test_a_repeat_row_never_hides_the_item_it_repeats(tmp_path: Path) -> None:
    """Duplicate and conflict records speak for their key only while no record of the item itself exists."""
    conflict = {"manifest": "media.csv", "line": 1}
    path = write(
        tmp_path / "r.jsonl",
        failed("k1", 1, when=at(0)),  # the item failed ...
        invalid("k1", 9, when=at(1), item=body(99), type_="duplicate_conflict", duplicate_of=conflict),  # ... then
        invalid("k2", 8, when=at(1), item=body(98), type_="duplicate_conflict", duplicate_of=conflict),  # before
        ok("k2", 2, when=at(2)),  # its original finished
        duplicate("k3", 7, 3, when=at(2)),  # the original of k3 never finished (interrupted)
    )
    report = build_report([path])
    assert report.items == {"succeeded": 1, "failed": 1, "invalid": 0, "duplicate": 1}
    assert report.records == {"succeeded": 1, "failed": 1, "invalid": 2, "duplicate": 1}


def test_keyless_invalid_rows_are_items_per_line_until_the_line_is_fixed(tmp_path: Path) -> None:
    """Invalid rows without a key count once per manifest line, and a later record for that line replaces them."""
    path = write(
        tmp_path / "r.jsonl",
        invalid(None, 3, when=at(0)),
        invalid(None, 4, when=at(0)),
        invalid(None, 4, run="run2", when=at(9)),  # still broken in the rerun: the same item
        ok("k3", 3, run="run2", when=at(9)),  # fixed and sent in the rerun
    )
    report = build_report([path])
    assert report.items == {"succeeded": 1, "failed": 0, "invalid": 1, "duplicate": 0}
    assert report.records["invalid"] == 3


def test_a_torn_tail_and_unreadable_lines_are_counted_not_fatal(tmp_path: Path) -> None:
    """Garbage, non-objects, unknown statuses and a torn last line are counted and skipped."""
    path = write(
        tmp_path / "r.jsonl",
        ok("k1", 1),
        b"not json at all\n",
        b"[1, 2, 3]\n",
        b'{"status": "exploded", "key": "k9"}\n',
        b"\n",
        failed("k2", 2),
        b'{"key": "k3", "manifest": "media.csv", "line": 3, "status": "succ',
    )
    report = build_report([path])
    assert report.records == {"succeeded": 1, "failed": 1, "invalid": 0, "duplicate": 0}
    assert report.files[0].lines == 6
    assert report.unreadable == 3
    assert report.torn_tails == 1
    text = render_text(report)
    assert "3 line(s) were not records" in text
    assert "torn line" in text


def test_hand_edited_fields_of_the_wrong_type_do_not_crash(tmp_path: Path) -> None:
    """A record with odd field types (line as text, error as a string, no finished_at) is still counted."""
    path = write(
        tmp_path / "r.jsonl",
        b'{"status": "failed", "key": 5, "line": "x", "error": "bad", "attempts": "2", "elapsed_ms": null}\n',
        b'{"status": "succeeded", "key": "k1", "elapsed_ms": true, "finished_at": "yesterday"}\n',
    )
    report = build_report([path])
    assert report.items == {"succeeded": 1, "failed": 1, "invalid": 0, "duplicate": 0}
    assert report.latency.count == 0
    json.loads(render_json(report))
    render_text(report)


def test_a_missing_results_file_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    """Every path is checked before anything is read; the error names the missing one."""
    present = write(tmp_path / "r.jsonl", ok("k1", 1))
    with pytest.raises(UsageError, match=r"nope\.jsonl: no such results file"):
        build_report([present, tmp_path / "nope.jsonl"])
    with pytest.raises(UsageError, match="is not a results file"):
        build_report([tmp_path])


def test_latency_percentiles_of_a_known_distribution(tmp_path: Path) -> None:
    """Succeeded records with elapsed 1..1000 ms give p50≈500, p90≈900, p99≈990 within the bucket precision."""
    records = [ok(f"k{i}", i, elapsed=i) for i in range(1, 1001)]
    records.append(failed("kf", 2000))  # failures do not count towards latency
    report = build_report([write(tmp_path / "r.jsonl", *records)])
    summary = report.latency.summary()
    assert summary["count"] == 1000
    for name, true in (("p50", 500), ("p90", 900), ("p99", 990)):
        value = summary[name]
        assert value is not None
        assert true <= value <= true * LogHistogram.BASE + 0.1, name
    assert summary["max"] == 1000
    assert summary["mean"] == 500.5


@given(st.lists(st.integers(min_value=0, max_value=10**7), min_size=1, max_size=300))
def test_histogram_percentiles_are_at_most_one_bucket_high(values: list[int]) -> None:
    """For any values, each reported percentile lies between the exact nearest-rank value and 2.2 % above it."""
    histogram = LogHistogram()
    for value in values:
        histogram.add(value)
    ordered = sorted(values)
    for p in (1, 50, 90, 99, 100):
        exact = ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]
        reported = histogram.percentile(p)
        assert reported is not None
        assert exact * (1 - 1e-9) <= reported <= exact * LogHistogram.BASE * (1 + 1e-9)


def test_attempts_histogram_buckets(tmp_path: Path) -> None:
    """Sent records fall in the 1, 2, 3, 4-5, 6-10 and >10 buckets; invalid rows (no attempt) are not counted."""
    attempts = [1, 1, 2, 3, 4, 5, 6, 10, 11, 30]
    records = [ok(f"k{i}", i, attempts=n) for i, n in enumerate(attempts)]
    report = build_report([write(tmp_path / "r.jsonl", *records, invalid(None, 99))])
    assert report.attempts == {"1": 2, "2": 1, "3": 1, "4-5": 2, "6-10": 2, ">10": 2}


def test_throughput_per_minute_and_overall(tmp_path: Path) -> None:
    """Sent records are bucketed by the minute of finished_at; the overall rate spans first to last."""
    path = write(
        tmp_path / "r.jsonl",
        ok("k1", 1, when=at(0, 10)),
        ok("k2", 2, when=at(0, 50)),
        ok("k3", 3, when=at(1, 30)),
        failed("k4", 4, when=at(2, 10)),
        invalid(None, 5, when=at(3, 0)),  # not sent: not throughput
    )
    report = build_report([path])
    document = json.loads(render_json(report))["throughput"]
    assert document["per_minute"] == [
        {"minute": "2026-03-01T10:00Z", "succeeded": 2, "failed": 0},
        {"minute": "2026-03-01T10:01Z", "succeeded": 1, "failed": 0},
        {"minute": "2026-03-01T10:02Z", "succeeded": 0, "failed": 1},
    ]
    assert document["finished"] == 4
    assert document["first_finished_at"] == "2026-03-01T10:00:10.000Z"
    assert document["items_per_s"] == pytest.approx(4 / 120, abs=1e-3)


def test_top_error_messages_are_grouped_with_examples(tmp_path: Path) -> None:
    """Current failures group by type and message, most frequent first, with up to three example lines."""
    records = [failed(f"a{i}", 10 + i, message="upstream timeout") for i in range(5)]
    records += [failed(f"b{i}", 30 + i, status=404, type_="not_found", message="gone", retryable=False) for i in (0, 1)]
    records.append(ok("a0", 10, run="run2", when=at(9)))  # fixed since: no longer a current failure
    report = build_report([write(tmp_path / "r.jsonl", *records)])
    assert [(g.type, g.message, g.count) for g in report.groups] == [
        ("server_error", "upstream timeout", 4),
        ("not_found", "gone", 2),
    ]
    assert report.groups[0].examples == ["media.csv:11", "media.csv:12", "media.csv:13"]
    assert report.groups[1].examples == ["media.csv:30", "media.csv:31"]


def realistic(tmp_path: Path) -> Path:
    """A results file of two runs: failures, invalid rows, a duplicate, a rerun that fixes most failures."""
    records: list[Result] = []
    for i in range(1, 41):
        if i % 10 == 0:
            records.append(failed(f"k{i}", i, when=at(i // 10, i), message="Bad gateway", status=502))
        elif i == 7:
            records.append(failed(f"k{i}", i, when=at(0, 30), status=422, type_="validation_error", retryable=False))
        else:
            records.append(ok(f"k{i}", i, when=at(i // 10, i), attempts=1 + i % 3, elapsed=80 + 7 * i))
    records += [invalid(None, 41), duplicate("k3", 42, 3)]
    records += [ok(f"k{i}", i, run="run2", when=at(30, i), elapsed=120) for i in (10, 20, 30)]
    return write(tmp_path / "results.jsonl", *records)


def test_render_json_is_valid_json_with_the_expected_numbers(tmp_path: Path) -> None:
    """The JSON document parses, has its stable top-level keys, and carries the counts."""
    document = json.loads(render_json(build_report([realistic(tmp_path)])))
    assert list(document) == [
        "verdict",  # null here: these records were written without run records
        "files",
        "records",
        "items",
        "errors",
        "attempts",
        "latency_ms",
        "throughput",
        "runs",
        "rehost",
        "unreadable_lines",
        "torn_tails",
    ]
    assert document["records"] == {"succeeded": 38, "failed": 5, "invalid": 1, "duplicate": 1, "total": 45}
    assert document["items"] == {
        "succeeded": 38,
        "failed": 2,
        "invalid": 1,
        "duplicate": 0,
        "total": 41,
        "failed_retryable": 1,
    }
    assert document["errors"]["by_type"]["items"] == {"invalid_row": 1, "server_error": 1, "validation_error": 1}
    assert document["errors"]["by_http_status"]["items"] == {"422": 1, "502": 1}
    assert document["errors"]["top"][0]["count"] == 1
    assert document["latency_ms"]["count"] == 38
    assert [run["run_id"] for run in document["runs"]] == ["run1", "run2"]
    assert document["files"][0]["torn_tail"] is False


def test_render_text_shows_the_key_figures(tmp_path: Path) -> None:
    """The text report names every status with its counts, the errors, latency, throughput and runs."""
    text = render_text(build_report([realistic(tmp_path)]))
    assert text.startswith("ingest report: 1 results file, 45 records, 41 items, 2 runs")
    assert any(line.split() == ["succeeded", "38", "38"] for line in text.splitlines())
    assert any(line.split() == ["failed", "5", "2"] for line in text.splitlines())
    figures = ("p50 ms", "Bad gateway", "media.csv:40", "url: URL must have a host", "502", "run2", "items/s", ">10")
    for figure in figures:
        assert figure in text, figure


def test_text_throughput_uses_wider_buckets_for_long_runs(tmp_path: Path) -> None:
    """Three hours of records are shown in at most two dozen throughput rows."""
    records = [ok(f"k{i}", i, when=at(i % 60, 0, hour=10 + i // 60)) for i in range(180)]
    text = render_text(build_report([write(tmp_path / "r.jsonl", *records)]))
    section = text.split("Throughput")[1].split("\n\n")[0].splitlines()
    assert "10min from (UTC)" in section[2]
    assert len(section) - 3 == 18


def test_an_empty_results_file_gives_an_empty_report(tmp_path: Path) -> None:
    """No records: zero counts, no percentiles, and both renderings still work."""
    report = build_report([write(tmp_path / "r.jsonl")])
    assert sum(report.items.values()) == 0
    assert json.loads(render_json(report))["latency_ms"]["p50"] is None
    assert "0 records" in render_text(report)


@pytest.mark.parametrize("module", [aggregate, histogram, render, scan, rerun_module])
def test_all_lists_every_public_function_and_class(module: ModuleType) -> None:
    """``__all__`` names every public function and class the module defines."""
    defined = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(value) or inspect.isclass(value))
        and value.__module__ == module.__name__
    }
    assert defined <= set(module.__all__)
