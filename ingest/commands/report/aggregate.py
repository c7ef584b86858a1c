"""Aggregation for ``ingest report RESULTS…``: what results files (one per run, or per shard) say happened.

Two views of the same lines:

- **records**: every line as written. An item that failed in one run and succeeded in the next is two records.
- **items**: the current state of each item. Per idempotency key the latest record wins, but a success is
  never undone (the rule ``ingest.results.index`` applies when it decides what a rerun sends). A record about a
  repeat of another row (``duplicate``, or an ``invalid`` conflict carrying ``duplicate_of``) speaks for its
  key only while nothing else does, so a conflict recorded after the original's failure does not hide it.
  An invalid row recorded without a key is an item of its own, named by ``manifest:line``, until a later
  record for the same manifest line replaces it (the row was fixed and sent).

"Latest" is file order within one file; across files, the later ``finished_at`` (files are also read in the
order of their first record, so argument order does not matter: ``results-*.jsonl`` works).

The report (``build_report``) holds:

- per file and in total: records and items by status; lines that were not records; a torn last line;
- errors by type and by HTTP status, for records and for the items that are failed or invalid now;
- the most frequent error messages among current failures (type + field + message, with a count and example
  lines);
- an attempts histogram, throughput per minute of ``finished_at`` and overall, and the runs seen;
- latency percentiles (p50/p90/p99/max) of ``elapsed_ms`` for succeeded records;
- rehosting (``report.rehost``): bytes uploaded, upload throughput, rehost failures by source kind.

Memory. The files are streamed. The item view needs one entry per distinct key (one packed ``int``: about
170 bytes a key with the key itself; the resume index of a run holds every key too); everything else is a
small aggregate with a cap.
Latency percentiles come from a **log-spaced histogram** (bucket bounds ``2**(1/32)`` apart: a percentile
is reported as its bucket's upper bound, at most 2.2 % above the true value, clamped to the observed
min/max), not from kept samples. Error messages are grouped exactly; after ``MAX_GROUPS`` distinct ones,
further messages count under ``(other messages)`` for their type.

A torn last line (a run killed mid-write, or one still writing) and unreadable lines are counted, never fatal.
"""

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingest.commands.report.histogram import LogHistogram
from ingest.commands.report.rehost import RehostTally
from ingest.commands.report.verdict import Verdict, build_verdict
from ingest.results.rules import error_of, utc_stamp
from ingest.results.scan import SENT, STATUSES, FileTally, ResultsScan, read_current, scan_results, where

__all__ = ["ErrorGroup", "Report", "RunSeen", "build_report", "iso_time"]

MAX_GROUPS = 10_000  # distinct (type, message) groups, runs, error types… kept before "(other …)"
EXAMPLES_PER_GROUP = 3
ATTEMPT_BUCKETS = ((1, "1"), (2, "2"), (3, "3"), (5, "4-5"), (10, "6-10"), (math.inf, ">10"))
_ATTEMPT_LABEL = ["", *(next(label for bound, label in ATTEMPT_BUCKETS if n <= bound) for n in range(1, 11))]
_MANY_ATTEMPTS = ATTEMPT_BUCKETS[-1][1]


@dataclass(slots=True)
class ErrorGroup:
    """One (type, message) among current failures: how many items, and up to three of their lines."""

    type: str
    message: str
    count: int = 0
    examples: list[str] = field(default_factory=list)  # "manifest:line"


@dataclass(slots=True)
class RunSeen:
    """One ``run_id`` found in the files: its records, and when its first and last ones finished."""

    run_id: str
    records: int = 0
    finished: int = 0  # succeeded + failed records
    first_ms: int | None = None
    last_ms: int | None = None

    def add(self, status: str, stamp: int | None) -> None:
        self.records += 1
        self.finished += status in SENT
        if stamp is None:
            return
        if self.first_ms is None or stamp < self.first_ms:
            self.first_ms = stamp
        if self.last_ms is None or stamp > self.last_ms:
            self.last_ms = stamp

    @property
    def items_per_s(self) -> float | None:
        """Succeeded + failed records per second between the run's first and last record."""
        return _rate(self.finished, self.first_ms, self.last_ms)


@dataclass(slots=True)
class Report:
    """Everything ``ingest report`` shows; built by ``build_report``, printed by ``render_text``/``render_json``."""

    files: list[FileTally]
    records: dict[str, int]  # by status, every status present
    items: dict[str, int]  # by status, every status present
    failed_retryable: int = 0  # items failed now whose failure is retryable
    record_errors: Counter[str] = field(default_factory=Counter)  # failed/invalid records by error type
    record_http: Counter[str] = field(default_factory=Counter)  # sent records by final HTTP status ("none")
    item_errors: Counter[str] = field(default_factory=Counter)  # failed/invalid items by error type
    item_http: Counter[str] = field(default_factory=Counter)  # failed items by final HTTP status
    groups: list[ErrorGroup] = field(default_factory=list)  # current failures by message, most frequent first
    attempts: dict[str, int] = field(default_factory=dict)  # sent records by attempts bucket ("1" … ">10")
    latency: LogHistogram = field(default_factory=LogHistogram)  # elapsed_ms of succeeded records
    per_minute: dict[int, list[int]] = field(default_factory=dict)  # epoch minute -> [succeeded, failed]
    first_ms: int | None = None  # earliest finished_at of a sent record
    last_ms: int | None = None  # latest finished_at of a sent record
    runs: list[RunSeen] = field(default_factory=list)  # in order of their first record
    verdict: Verdict | None = None  # how the last run ended and what is left (None: no run records)
    rehost: RehostTally = field(default_factory=RehostTally)  # bytes uploaded, throughput, failures by kind

    def __repr__(self) -> str:
        return (
            f"Report(files={len(self.files)}, records={sum(self.records.values())}, items={self.items}, "
            f"runs={len(self.runs)}, unreadable={self.unreadable}, torn_tails={self.torn_tails})"
        )

    @property
    def finished(self) -> int:
        """Sent records (succeeded + failed)."""
        return sum(sum(counts) for counts in self.per_minute.values())

    @property
    def items_per_s(self) -> float | None:
        """Sent records per second between the first and the last ``finished_at``."""
        return _rate(self.finished, self.first_ms, self.last_ms)

    @property
    def unreadable(self) -> int:
        return sum(tally.unreadable for tally in self.files)

    @property
    def torn_tails(self) -> int:
        return sum(tally.torn_tail for tally in self.files)


class _Collector:
    """Record-level aggregates, fed one record at a time by ``scan_results``."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.runs: dict[str, RunSeen] = {}  # run_id -> what it wrote (capped at MAX_GROUPS runs)

    def __call__(self, record: dict[str, Any], stamp: int | None) -> None:
        report, status = self.report, record["status"]
        self._run(str(record.get("run_id") or "(none)")).add(status, stamp)
        if status in ("failed", "invalid"):
            _count_capped(report.record_errors, error_of(record).get("type"))
        if status not in SENT:
            return
        report.rehost.add_record(record, stamp)
        _count_capped(report.record_http, _http(record))
        attempts = record.get("attempts")
        if isinstance(attempts, int) and attempts >= 1:
            report.attempts[_ATTEMPT_LABEL[attempts] if attempts < len(_ATTEMPT_LABEL) else _MANY_ATTEMPTS] += 1
        elapsed = record.get("elapsed_ms")
        if status == "succeeded" and isinstance(elapsed, int | float) and not isinstance(elapsed, bool):
            report.latency.add(elapsed)
        if stamp is not None:
            report.per_minute.setdefault(stamp // 60_000, [0, 0])[status == "failed"] += 1
            if report.first_ms is None or stamp < report.first_ms:
                report.first_ms = stamp
            if report.last_ms is None or stamp > report.last_ms:
                report.last_ms = stamp

    def _run(self, run_id: str) -> RunSeen:
        if run_id not in self.runs and len(self.runs) >= MAX_GROUPS:
            run_id = "(other runs)"
        run = self.runs.get(run_id)
        if run is None:
            run = self.runs[run_id] = RunSeen(run_id)
        return run


def build_report(paths: Sequence[Path]) -> Report:
    """Read ``paths`` (one pass over all records, then the current failures again) into a ``Report``.

    ``UsageError`` (naming the file) if a path is missing or unreadable.
    """
    report = Report(files=[], records={}, items={}, attempts={label: 0 for _, label in ATTEMPT_BUCKETS})
    collector = _Collector(report)
    scan = scan_results(paths, collector)
    report.files = scan.tallies
    totals = sum((tally.records for tally in scan.tallies), Counter[str]())
    report.records = {status: totals[status] for status in STATUSES}
    report.items = scan.states.counts()
    report.runs = sorted(collector.runs.values(), key=lambda run: (run.first_ms is None, run.first_ms or 0))
    _collect_failures(report, scan)
    report.verdict = build_verdict(report.files, report.items)
    return report


def _collect_failures(report: Report, scan: ResultsScan) -> None:
    groups: dict[tuple[str, str], ErrorGroup] = {}
    for _, _, record in read_current(scan, ("failed", "invalid")):
        error = error_of(record)
        type_ = str(error.get("type") or "(no type)")
        _count_capped(report.item_errors, type_)
        if record["status"] == "failed":
            _count_capped(report.item_http, _http(record))
            report.failed_retryable += bool(error.get("retryable"))
            report.rehost.add_failure(record)
        key = (type_, _message(error))
        if key not in groups and len(groups) >= MAX_GROUPS:
            key = (type_, "(other messages)")
        group = groups.get(key) or groups.setdefault(key, ErrorGroup(*key))
        group.count += 1
        if len(group.examples) < EXAMPLES_PER_GROUP:
            manifest, line = where(record)
            group.examples.append(f"{manifest}:{line}")
    report.groups = sorted(groups.values(), key=lambda group: (-group.count, group.type, group.message))


def _message(error: dict[str, Any]) -> str:
    """The error's message, prefixed with the manifest field at fault if there is one (invalid rows)."""
    message, field_name = str(error.get("message") or ""), error.get("field")
    return f"{field_name}: {message}" if field_name else message


def _http(record: dict[str, Any]) -> str:
    status = record.get("http_status")
    return str(status) if isinstance(status, int) else "none"


def _count_capped(counter: Counter[str], key: object) -> None:
    if key in counter:  # the common case, first
        counter[key] += 1  # type: ignore[index]  # key is a str: only str keys are ever added
        return
    name = str(key) if key else "(no type)"
    if name not in counter and len(counter) >= MAX_GROUPS:
        name = "(other)"
    counter[name] += 1


def _rate(count: int, first_ms: int | None, last_ms: int | None) -> float | None:
    if first_ms is None or last_ms is None or last_ms <= first_ms:
        return None
    return count / ((last_ms - first_ms) / 1000)


def iso_time(ms: int | None, *, minutes: bool = False) -> str | None:
    if ms is None:
        return None
    return utc_stamp(datetime.fromtimestamp(ms / 1000, UTC), minutes=minutes)
