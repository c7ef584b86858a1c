"""``ingest report RESULTS…``: what one or more results files (one per run, or one per shard) say happened.

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
- latency percentiles (p50/p90/p99/max) of ``elapsed_ms`` for succeeded records.

Memory. The files are streamed. The item view needs one entry per distinct key (one packed ``int``: about
170 bytes a key with the key itself; the resume index of a run holds every key too); everything else is a
small aggregate with a cap.
Latency percentiles come from a **log-spaced histogram** (bucket bounds ``2**(1/32)`` apart: a percentile
is reported as its bucket's upper bound, at most 2.2 % above the true value, clamped to the observed
min/max), not from kept samples. Error messages are grouped exactly; after ``MAX_GROUPS`` distinct ones,
further messages count under ``(other messages)`` for their type.

A torn last line (a run killed mid-write, or one still writing) and unreadable lines are counted, never fatal.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from ingest.errors import UsageError
from ingest.results.record import Status

__all__ = [
    "ErrorGroup",
    "FileTally",
    "ItemStates",
    "LogHistogram",
    "Report",
    "ResultsScan",
    "RunSeen",
    "build_report",
    "check_paths",
    "location_of",
    "parse_record",
    "read_current",
    "read_records",
    "render_json",
    "render_text",
    "scan_results",
    "stamp_ms",
    "status_of",
    "where",
]

STATUSES: tuple[str, ...] = tuple(status.value for status in Status)
SENT = ("succeeded", "failed")  # statuses of records whose item was sent to the API
MAX_GROUPS = 10_000  # distinct (type, message) groups, runs, error types… kept before "(other …)"
EXAMPLES_PER_GROUP = 3
JSON_TOP_GROUPS = 100  # error groups in the JSON output
FIRST_STAMP_RECORDS = 100  # records looked at to place a file in time
ATTEMPT_BUCKETS = ((1, "1"), (2, "2"), (3, "3"), (5, "4-5"), (10, "6-10"), (math.inf, ">10"))
_ATTEMPT_LABEL = ["", *(next(label for bound, label in ATTEMPT_BUCKETS if n <= bound) for n in range(1, 11))]
_MANY_ATTEMPTS = ATTEMPT_BUCKETS[-1][1]
TEXT_MAX_MINUTES = 24  # throughput rows in the text output; wider buckets beyond that
_WIDTHS_MIN = (1, 5, 10, 15, 30, 60, 120, 240, 720, 1440, 10080)  # bucket widths tried for the text table

# -- reading results files ---------------------------------------------------------------------------------


@dataclass(slots=True)
class FileTally:
    """What one results file holds: its records and the items whose current record it holds, by status."""

    path: str
    lines: int = 0  # complete lines (blank ones too)
    unreadable: int = 0  # complete, non-blank lines that are not records
    torn_tail: bool = False  # the last line has no newline (the writer died mid-line, or is still writing)
    records: Counter[str] = field(default_factory=Counter)
    items: Counter[str] = field(default_factory=Counter)


def check_paths(paths: Sequence[Path]) -> None:
    """``UsageError`` unless every path is an existing file (checked before reading any)."""
    if not paths:
        raise UsageError("no results file given")
    for path in paths:
        if not path.exists():
            raise UsageError(f"{path}: no such results file")
        if not path.is_file():
            raise UsageError(f"{path}: is not a results file")


def parse_record(raw: bytes) -> dict[str, Any] | None:
    """A results line as a record: a JSON object with a known ``status``; else ``None``."""
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict) or record.get("status") not in STATUSES:
        return None
    return record


def read_records(path: Path, tally: FileTally) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(byte offset, record)`` per readable line of ``path``; counts the rest in ``tally``."""
    offset = 0
    try:
        with path.open("rb") as file:
            for raw in file:
                start, offset = offset, offset + len(raw)
                if not raw.endswith(b"\n"):
                    tally.torn_tail = True
                    return
                tally.lines += 1
                if not raw.strip():
                    continue
                record = parse_record(raw)
                if record is None:
                    tally.unreadable += 1
                    continue
                yield start, record
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


def stamp_ms(value: object) -> int | None:
    """``finished_at`` (ISO 8601) as milliseconds since the epoch; ``None`` if absent or malformed."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def where(record: dict[str, Any]) -> tuple[str, int]:
    """The record's ``(manifest, line)``, whatever a hand-edited file put there."""
    manifest, line = record.get("manifest"), record.get("line")
    return manifest if isinstance(manifest, str) else "?", line if isinstance(line, int) else 0


# -- the current state of every item -----------------------------------------------------------------------

# One packed int per item keeps the per-key map small (millions of keys): from the low bits up,
# status code (2 bits) | "repeat" flag (1 bit) | byte offset (48 bits) | file index (16 bits) | finished_at ms.
_CODE_OF = {status: code for code, status in enumerate(STATUSES)}
_REPEAT = 4
_OFFSET_SHIFT, _OFFSET_BITS, _FILE_BITS = 3, 48, 16
_FILE_SHIFT = _OFFSET_SHIFT + _OFFSET_BITS
_STAMP_SHIFT = _FILE_SHIFT + _FILE_BITS
_SUCCEEDED = _CODE_OF["succeeded"]
MAX_FILES = 1 << _FILE_BITS


def _pack(code: int, *, file: int, offset: int, stamp: int) -> int:
    return (((max(stamp, 0) << _FILE_BITS | file) << _OFFSET_BITS | offset) << _OFFSET_SHIFT) | code


def status_of(entry: int) -> str:
    """The status an item is in, from its packed entry."""
    return STATUSES[entry & 3]


def location_of(entry: int) -> tuple[int, int]:
    """``(file index, byte offset)`` of the record that decides the item."""
    return (entry >> _FILE_SHIFT) & (MAX_FILES - 1), (entry >> _OFFSET_SHIFT) & ((1 << _OFFSET_BITS) - 1)


def _later(new: int, old: int) -> bool:
    """Whether ``new`` was recorded after ``old``: file order in one file, else ``finished_at``."""
    if ((new ^ old) >> _FILE_SHIFT) & (MAX_FILES - 1) == 0:
        return True  # same file, and files are read front to back
    return new >> _STAMP_SHIFT >= old >> _STAMP_SHIFT


def _replaces(new: int, old: int) -> bool:
    """Whether the record ``new`` becomes its key's deciding record instead of ``old``."""
    if new & _REPEAT:
        return bool(old & _REPEAT) and _later(new, old)  # a repeat row never overrides the item's own record
    if old & _REPEAT:
        return True
    new_done, old_done = (new & 3) == _SUCCEEDED, (old & 3) == _SUCCEEDED
    if new_done != old_done:
        return new_done  # a success is never undone
    return _later(new, old)


class ItemStates:
    """The deciding record of every item (see the module docstring); fed in reading order by ``add``."""

    __slots__ = ("_keyed", "_keyless")

    def __init__(self) -> None:
        self._keyed: dict[str, int] = {}  # idempotency key -> packed entry of its deciding record
        self._keyless: dict[tuple[str, int], int] = {}  # (manifest, line) -> packed entry, records with key null

    def __repr__(self) -> str:
        return f"ItemStates(keys={len(self._keyed)}, keyless_rows={len(self._keyless)}, by_status={self.counts()})"

    def __len__(self) -> int:
        return len(self._keyed) + len(self._keyless)

    def add(self, record: dict[str, Any], *, file: int, offset: int, stamp: int | None) -> None:
        """Fold one record in; ``stamp`` is its ``finished_at`` in ms (``None``: unknown, oldest)."""
        status = record["status"]
        repeat = status == "duplicate" or record.get("duplicate_of") is not None
        entry = _pack(_CODE_OF[status] | (_REPEAT if repeat else 0), file=file, offset=offset, stamp=stamp or 0)
        key = record.get("key")
        if not isinstance(key, str):
            row = where(record)
            old = self._keyless.get(row)
            if old is None or _later(entry, old):
                self._keyless[row] = entry
            return
        if self._keyless:
            row = where(record)
            old = self._keyless.get(row) if row[1] > 0 else None  # line 0: no line recorded, nothing to match
            if old is not None and _later(entry, old):
                del self._keyless[row]  # the row was fixed: it is this key's item now
        old = self._keyed.get(key)
        if old is None or _replaces(entry, old):
            self._keyed[key] = entry

    def entries(self) -> Iterator[int]:
        """The packed entry of every item."""
        yield from self._keyed.values()
        yield from self._keyless.values()

    def counts(self) -> dict[str, int]:
        """Items by status, every status present."""
        counts = Counter(entry & 3 for entry in self.entries())
        return {status: counts[code] for status, code in _CODE_OF.items()}


@dataclass(slots=True)
class ResultsScan:
    """One pass over results files: per-file tallies and the item states."""

    paths: list[Path]
    tallies: list[FileTally]
    states: ItemStates


Visitor = Callable[[dict[str, Any], int | None], None]  # (record, finished_at in ms or None)


def scan_results(paths: Sequence[Path], visit: Visitor | None = None) -> ResultsScan:
    """Stream every record of ``paths`` once into item states, calling ``visit`` on each; ``UsageError`` if a
    file is missing or unreadable."""
    check_paths(paths)
    if len(paths) > MAX_FILES:
        raise UsageError(f"too many results files ({len(paths)}; at most {MAX_FILES})")
    scan = ResultsScan(list(paths), [FileTally(str(path)) for path in paths], ItemStates())
    for index in sorted(range(len(paths)), key=lambda i: _first_stamp(paths[i])):
        tally = scan.tallies[index]
        for offset, record in read_records(paths[index], tally):
            stamp = stamp_ms(record.get("finished_at"))
            tally.records[record["status"]] += 1
            scan.states.add(record, file=index, offset=offset, stamp=stamp)
            if visit is not None:
                visit(record, stamp)
    for entry in scan.states.entries():
        scan.tallies[location_of(entry)[0]].items[status_of(entry)] += 1
    return scan


def _first_stamp(path: Path) -> int:
    """The first ``finished_at`` among the file's first records (0 if none): the file's place in time."""
    for _, record in itertools.islice(read_records(path, FileTally(str(path))), FIRST_STAMP_RECORDS):
        stamp = stamp_ms(record.get("finished_at"))
        if stamp is not None:
            return stamp
    return 0


def read_current(scan: ResultsScan, statuses: Collection[str]) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """``(file index, offset, record)`` of the deciding record of every item now in one of ``statuses``, in
    file order (read again from the files: only these records, one file open at a time)."""
    wanted = {_CODE_OF[status] for status in statuses}
    locations = sorted(location_of(entry) for entry in scan.states.entries() if entry & 3 in wanted)
    for file, group in itertools.groupby(locations, key=lambda location: location[0]):
        with scan.paths[file].open("rb") as handle:
            for _, offset in group:
                handle.seek(offset)
                record = parse_record(handle.readline())
                if record is not None:  # None only if the file was rewritten since the scan
                    yield file, offset, record


# -- aggregates --------------------------------------------------------------------------------------------


_BASE = 2 ** (1 / 32)
_PER_LOG_UNIT = 1 / math.log(_BASE)  # log(value) * this = log base _BASE of value


class LogHistogram:
    """Counts of non-negative values in log-spaced buckets; percentiles within 2.2 % (see the module docstring).

    Bucket ``i`` holds values in ``(BASE**(i-1), BASE**i]``; zero (and below) has a bucket of its own.
    """

    BASE = _BASE
    __slots__ = ("_buckets", "_zeros", "count", "max", "min", "total")

    def __init__(self) -> None:
        self._buckets: Counter[int] = Counter()  # bucket index -> values in it
        self._zeros = 0  # values <= 0
        self.count = 0
        self.total = 0.0  # sum of values, for the mean
        self.min = math.inf
        self.max = -math.inf

    def __repr__(self) -> str:
        return f"LogHistogram(count={self.count}, buckets={len(self._buckets)}, min={self.min}, max={self.max})"

    def add(self, value: float) -> None:
        """Count one value."""
        self.count += 1
        self.total += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        if value <= 0:
            self._zeros += 1
        else:
            self._buckets[math.ceil(math.log(value) * _PER_LOG_UNIT)] += 1

    def percentile(self, p: float) -> float | None:
        """The nearest-rank ``p``-th percentile (0 < p <= 100), as its bucket's upper bound; ``None`` if empty."""
        if not self.count:
            return None
        rank = max(1, math.ceil(p / 100 * self.count))
        seen = self._zeros
        if seen >= rank:
            return max(self.min, 0.0)
        for index in sorted(self._buckets):
            seen += self._buckets[index]
            if seen >= rank:
                return min(max(self.BASE**index, self.min), self.max)
        return self.max

    def summary(self) -> dict[str, float | int | None]:
        """``count``, ``p50``, ``p90``, ``p99``, ``max``, ``mean``."""
        if not self.count:
            return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}
        return {
            "count": self.count,
            **{f"p{p}": _round(self.percentile(p)) for p in (50, 90, 99)},
            "max": _round(self.max),
            "mean": _round(self.total / self.count),
        }


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
            _count_capped(report.record_errors, _error(record).get("type"))
        if status not in SENT:
            return
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
    return report


def _collect_failures(report: Report, scan: ResultsScan) -> None:
    groups: dict[tuple[str, str], ErrorGroup] = {}
    for _, _, record in read_current(scan, ("failed", "invalid")):
        error = _error(record)
        type_ = str(error.get("type") or "(no type)")
        _count_capped(report.item_errors, type_)
        if record["status"] == "failed":
            _count_capped(report.item_http, _http(record))
            report.failed_retryable += bool(error.get("retryable"))
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


def _error(record: dict[str, Any]) -> dict[str, Any]:
    error = record.get("error")
    return error if isinstance(error, dict) else {}


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


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _iso(ms: int | None, *, minutes: bool = False) -> str | None:
    if ms is None:
        return None
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    if minutes:
        return moment.strftime("%Y-%m-%dT%H:%MZ")
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- JSON --------------------------------------------------------------------------------------------------


def render_json(report: Report) -> str:
    """The report as one JSON document with a fixed shape (keys always present; ``null`` where unknown)."""
    document = {
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
            "first_finished_at": _iso(report.first_ms),
            "last_finished_at": _iso(report.last_ms),
            "items_per_s": _round(report.items_per_s, 3),
            "per_minute": [
                {"minute": _iso(minute * 60_000, minutes=True), "succeeded": counts[0], "failed": counts[1]}
                for minute, counts in sorted(report.per_minute.items())
            ],
        },
        "runs": [
            {
                "run_id": run.run_id,
                "records": run.records,
                "finished": run.finished,
                "first_finished_at": _iso(run.first_ms),
                "last_finished_at": _iso(run.last_ms),
                "items_per_s": _round(run.items_per_s, 3),
            }
            for run in report.runs
        ],
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
    out = [f"ingest report: {files}, {total_records:,} records, {total_items:,} items, {runs}"]
    out += _warnings(report)
    out += _section("Status (records: every line; items: the latest record per item)", _status_rows(report))
    if len(report.files) > 1 or report.unreadable or report.torn_tails:
        out += _section("Files (status columns: items whose latest record is in the file)", _file_rows(report))
    out += _error_sections(report, top)
    out += _section("Attempts (sent records)", _attempt_rows(report))
    out += _latency_section(report)
    out += _throughput_section(report)
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
    span = f"{_iso(report.first_ms)} → {_iso(report.last_ms)}: {report.finished:,} finished"
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
        rows.append((_iso(start * 60_000, minutes=True), succeeded, failed, (succeeded + failed) / (width * 60)))
    return ["", "Throughput (succeeded + failed records by finished_at)", f"  {span}", *_table(rows)]


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
        rows.append((run.run_id, run.records, run.finished, _iso(run.first_ms), _iso(run.last_ms), run.items_per_s))
    return rows
