"""Rendering a ``Report``: JSON for machines, tables for people."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import orjson

from ingest.commands.report.aggregate import Report, iso_time
from ingest.commands.report.histogram import rounded
from ingest.commands.report.verdict import describe
from ingest.results.scan import STATUSES

__all__ = ["render_json", "render_text"]

JSON_TOP_GROUPS = 100  # error groups in the JSON output
TEXT_MAX_MINUTES = 24  # throughput rows in the text output; wider buckets beyond that
_WIDTHS_MIN = (1, 5, 10, 15, 30, 60, 120, 240, 720, 1440, 10080)  # bucket widths tried for the text table

# -- JSON --------------------------------------------------------------------------------------------------


def render_json(report: Report) -> str:
    """The report as one JSON document with a fixed shape (keys always present; ``null`` where unknown)."""
    document = {
        "verdict": report.verdict.as_dict() if report.verdict is not None else None,
        "files": [
            {
                "path": tally.path,
                "lines": tally.lines,
                "unreadable_lines": tally.unreadable,
                "torn_tail": tally.torn_tail,
                "records": _by_status(tally.records),
                "items": _by_status(tally.items),
            }
            for tally in report.files
        ],
        "records": {**report.records, "total": sum(report.records.values())},
        "items": {**report.items, "total": sum(report.items.values()), "failed_retryable": report.failed_retryable},
        "errors": {
            "by_type": {"items": _sorted(report.item_errors), "records": _sorted(report.record_errors)},
            "by_http_status": {"items": _sorted(report.item_http), "records": _sorted(report.record_http)},
            "groups": len(report.groups),
            "top": [
                {"type": g.type, "message": g.message, "count": g.count, "examples": g.examples}
                for g in report.groups[:JSON_TOP_GROUPS]
            ],
        },
        "attempts": report.attempts,
        "latency_ms": {**report.latency.summary(), "method": "log-spaced histogram, at most 2.2% high"},
        "throughput": {
            "finished": report.finished,
            "first_finished_at": iso_time(report.first_ms),
            "last_finished_at": iso_time(report.last_ms),
            "items_per_s": rounded(report.items_per_s, 3),
            "per_minute": [
                {"minute": iso_time(minute * 60_000, minutes=True), "succeeded": counts[0], "failed": counts[1]}
                for minute, counts in sorted(report.per_minute.items())
            ],
        },
        "runs": [
            {
                "run_id": run.run_id,
                "records": run.records,
                "finished": run.finished,
                "first_finished_at": iso_time(run.first_ms),
                "last_finished_at": iso_time(run.last_ms),
                "items_per_s": rounded(run.items_per_s, 3),
            }
            for run in report.runs
        ],
        "rehost": report.rehost.to_json(),
        "unreadable_lines": report.unreadable,
        "torn_tails": report.torn_tails,
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode()


def _by_status(counts: Counter[str]) -> dict[str, int]:
    return {status: counts[status] for status in STATUSES}


def _sorted(counter: Counter[str]) -> dict[str, int]:
    return dict(sorted(counter.items()))


# -- text --------------------------------------------------------------------------------------------------


def render_text(report: Report, *, top: int = 5) -> str:
    """The report as plain-text tables (aligned columns), ``top`` error messages."""
    total_records, total_items = sum(report.records.values()), sum(report.items.values())
    files = "1 results file" if len(report.files) == 1 else f"{len(report.files)} results files"
    runs = "1 run" if len(report.runs) == 1 else f"{len(report.runs)} runs"
    out = [*describe(report.verdict), ""] if report.verdict is not None else []
    out.append(f"ingest report: {files}, {total_records:,} records, {total_items:,} items, {runs}")
    out += _warnings(report)
    out += _section("Status (records: every line; items: the latest record per item)", _status_rows(report))
    if len(report.files) > 1 or report.unreadable or report.torn_tails:
        out += _section("Files (status columns: items whose latest record is in the file)", _file_rows(report))
    out += _error_sections(report, top)
    out += _section("Attempts (sent records)", _attempt_rows(report))
    out += _latency_section(report)
    out += _throughput_section(report)
    out += _rehost_section(report)
    out += _section("Runs", _run_rows(report))
    return "\n".join(out) + "\n"


Row = Sequence[object]


def _section(title: str, rows: list[Row]) -> list[str]:
    if len(rows) < 2:
        return []
    return ["", title, *_table(rows)]


def _table(rows: list[Row]) -> list[str]:
    """Aligned columns: the first row is the header; numbers right-aligned, text left-aligned."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    numeric = [all(isinstance(row[i], int | float) or row[i] is None for row in rows[1:]) for i in range(len(widths))]
    lines = []
    for row in cells:
        parts = [text.rjust(w) if num else text.ljust(w) for text, w, num in zip(row, widths, numeric, strict=True)]
        lines.append(("  " + "  ".join(parts)).rstrip())
    return lines


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def _warnings(report: Report) -> list[str]:
    notes = []
    if report.unreadable:
        notes.append(f"note: {report.unreadable:,} line(s) were not records and were skipped")
    if report.torn_tails:
        notes.append(
            f"note: {report.torn_tails} file(s) end in a torn line (a run was killed mid-write, or is still "
            "writing); it was ignored, and the next run repairs it"
        )
    return notes


def _status_rows(report: Report) -> list[Row]:
    rows: list[Row] = [("status", "records", "items")]
    rows += [(status, report.records[status], report.items[status]) for status in STATUSES]
    rows.append(("total", sum(report.records.values()), sum(report.items.values())))
    if report.items["failed"]:
        rows.append(("(failed, retryable)", None, report.failed_retryable))
    return rows


def _file_rows(report: Report) -> list[Row]:
    rows: list[Row] = [("file", "lines", "records", "items", *STATUSES, "unreadable", "torn")]
    for tally in report.files:
        items = [tally.items[status] for status in STATUSES]
        rows.append(
            (tally.path, tally.lines, tally.records.total(), sum(items), *items, tally.unreadable, tally.torn_tail)
        )
    return rows


def _error_sections(report: Report, top: int) -> list[str]:
    out = []
    types = sorted(set(report.item_errors) | set(report.record_errors), key=lambda t: (-report.item_errors[t], t))
    type_rows: list[Row] = [("error type (failed, invalid)", "items now", "records")]
    type_rows += [(t, report.item_errors[t], report.record_errors[t]) for t in types]
    out += _section("Errors by type", type_rows)
    codes = sorted(set(report.item_http) | set(report.record_http), key=lambda code: (code == "none", code))
    http_rows: list[Row] = [("HTTP status (last attempt)", "failed items now", "records")]
    http_rows += [(code, report.item_http[code], report.record_http[code]) for code in codes]
    out += _section("HTTP statuses (sent records)", http_rows)
    if report.groups and top > 0:
        shown = report.groups[:top]
        rows: list[Row] = [("items", "type", "message", "examples")]
        rows += [(g.count, g.type, _shorten(g.message, 90), ", ".join(g.examples)) for g in shown]
        more = len(report.groups) - len(shown)
        title = f"Top error messages (failed or invalid now){f'; {more} more' if more > 0 else ''}"
        out += _section(title, rows)
    return out


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _attempt_rows(report: Report) -> list[Row]:
    total = sum(report.attempts.values())
    if not total:
        return []
    rows: list[Row] = [("attempts", "records", "share", "")]
    for label, count in report.attempts.items():
        share = count / total
        rows.append((label, count, f"{share:6.1%}", "#" * round(share * 40)))
    return rows


def _latency_section(report: Report) -> list[str]:
    summary = report.latency.summary()
    if not summary["count"]:
        return []
    rows: list[Row] = [("succeeded", "p50 ms", "p90 ms", "p99 ms", "max ms", "mean ms")]
    rows.append((summary["count"], *(float(summary[name] or 0) for name in ("p50", "p90", "p99", "max", "mean"))))
    return ["", "Latency (elapsed_ms of succeeded items, retries included; log histogram, ≤2.2% high)", *_table(rows)]


def _throughput_section(report: Report) -> list[str]:
    if not report.per_minute:
        return []
    overall = report.items_per_s
    span = f"{iso_time(report.first_ms)} → {iso_time(report.last_ms)}: {report.finished:,} finished"
    if overall is not None:
        span += f", {overall:,.2f} items/s overall"
    if len(report.runs) > 1:
        span += " (time between runs included)"
    width = _bucket_width(report.per_minute)
    buckets: dict[int, list[int]] = {}
    for minute, (succeeded, failed) in report.per_minute.items():
        counts = buckets.setdefault(minute - minute % width, [0, 0])
        counts[0] += succeeded
        counts[1] += failed
    label = "minute (UTC)" if width == 1 else f"{_duration(width)} from (UTC)"
    rows: list[Row] = [(label, "succeeded", "failed", "avg/s")]
    for start, (succeeded, failed) in sorted(buckets.items()):
        seconds = _covered_seconds(report, start * 60_000, width * 60_000)
        rows.append((iso_time(start * 60_000, minutes=True), succeeded, failed, (succeeded + failed) / seconds))
    return ["", "Throughput (succeeded + failed records by finished_at)", f"  {span}", *_table(rows)]


def _covered_seconds(report: Report, start_ms: int, width_ms: int) -> float:
    """How much of the bucket the records span: the first and the last bucket are partial, and an average over
    their whole width would understate them (at least a second, so one lone record is not a division by zero)."""
    first = max(start_ms, report.first_ms if report.first_ms is not None else start_ms)
    last = min(start_ms + width_ms, report.last_ms if report.last_ms is not None else start_ms + width_ms)
    return max(1.0, (last - first) / 1000)


def _rehost_section(report: Report) -> list[str]:
    rows = report.rehost.text_rows()
    if not rows:
        return []
    return ["", "Rehost (media uploaded into fal storage before registration)", f"  {report.rehost.summary_line()}",
            *_table(rows)]  # fmt: skip


def _bucket_width(per_minute: dict[int, list[int]]) -> int:
    """The narrowest width (minutes) that shows the minutes in at most ``TEXT_MAX_MINUTES`` rows."""
    minutes = sorted(per_minute)
    for width in _WIDTHS_MIN:
        if len({minute - minute % width for minute in minutes}) <= TEXT_MAX_MINUTES:
            return width
    return _WIDTHS_MIN[-1]


def _duration(minutes: int) -> str:
    if minutes % 1440 == 0:
        return f"{minutes // 1440}d"
    return f"{minutes // 60}h" if minutes % 60 == 0 else f"{minutes}min"


def _run_rows(report: Report) -> list[Row]:
    rows: list[Row] = [("run id", "records", "finished", "first finished_at", "last finished_at", "items/s")]
    for run in report.runs:
        rows.append(
            (run.run_id, run.records, run.finished, iso_time(run.first_ms), iso_time(run.last_ms), run.items_per_s)
        )
    return rows
