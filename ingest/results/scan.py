"""One pass over results files, shared by resume-aware commands (``ingest report``, ``ingest failed``).

Two views of the same lines:

- **records**: every line as written. An item that failed in one run and succeeded in the next is two records.
- **items**: the current state of each item. Per idempotency key the latest record wins, but a success is
  never undone (``ingest.results.rules.success_is_final``, the rule the resume index applies too). A record about
  a repeat of another row (``duplicate``, or an ``invalid`` conflict carrying ``duplicate_of``) speaks for its
  key only while nothing else does, so a conflict recorded after the original's failure does not hide it.
  An invalid row recorded without a key is an item of its own, named by ``manifest:line``, until a later
  record for the same manifest line replaces it (the row was fixed and sent).

"Latest" is file order within one file; across files, the later ``finished_at`` (files are also read in the
order of their first record, so argument order does not matter: ``results-*.jsonl`` works).

Run records (``{"record": "run_started" | "run_ended", …}``, ``ingest.results.runlog``) are not items: each file's
are kept in its ``FileTally.runs`` (two small lines per run) for ``ingest report``'s verdict.

Memory: the files are streamed; the item view keeps one packed ``int`` per distinct key. A torn last line (a run
killed mid-write, or one still writing) and unreadable lines are counted, never fatal.
"""

import itertools
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from ingest.errors import UsageError
from ingest.results.lines import CompleteLines
from ingest.results.record import Status
from ingest.results.rules import replaces
from ingest.results.runlog import RUN_RECORD_PREFIX, RunHistory

__all__ = [
    "FileTally",
    "ItemStates",
    "ResultsScan",
    "check_paths",
    "location_of",
    "parse_record",
    "read_current",
    "read_records",
    "scan_results",
    "stamp_ms",
    "status_of",
    "where",
]

STATUSES: tuple[str, ...] = tuple(status.value for status in Status)
SENT = ("succeeded", "failed")  # statuses of records whose item was sent to the API
FIRST_STAMP_RECORDS = 100  # records looked at to place a file in time


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
    runs: RunHistory = field(default_factory=RunHistory)  # its run records (two lines per run), not items


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
    """Yield ``(byte offset, record)`` per readable complete line of ``path`` (``ingest.results.lines``); counts
    the rest in ``tally``."""
    try:
        with path.open("rb") as file:
            lines = CompleteLines(file)
            for start, raw in lines:
                tally.lines += 1
                if raw is None:  # longer than any record of ours
                    tally.unreadable += 1
                elif raw.startswith(RUN_RECORD_PREFIX):
                    _add_run(tally, raw)
                elif (record := parse_record(raw)) is not None:
                    yield start, record
                elif raw.strip():  # a blank line is nothing, not unreadable
                    tally.unreadable += 1
            tally.torn_tail = lines.torn
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


def _add_run(tally: FileTally, raw: bytes) -> None:
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        tally.unreadable += 1
        return
    if isinstance(record, dict):
        tally.runs.add(record)


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
    return replaces(
        new_succeeded=(new & 3) == _SUCCEEDED, old_succeeded=(old & 3) == _SUCCEEDED, new_is_later=_later(new, old)
    )


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
