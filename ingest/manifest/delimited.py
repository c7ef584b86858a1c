"""Delimited text (CSV, TSV, Excel's "Unicode Text"): a header row, then one row per record, parsed by the ``csv``
module over our own line feed, with the delimiter ``ingest.manifest.sniff`` found in the header (or ``--delimiter``).

- The header is the first non-blank record. It must name a ``url`` column (or the column ``columns`` maps
  ``url`` to) and no field's column twice; anything else is a ``ManifestError`` before the first row. Column
  names match case-insensitively, after stripping surrounding whitespace (``URL``, `` Type ``); an unknown column
  close to a field's name is named in the warning with a "did you mean".
- A data row must have exactly as many cells as the header. An empty cell is an absent field (so a default
  applies); ``url`` and ``type`` are trimmed, other cells taken verbatim (``ingest.manifest.cells``: ``favorite``
  is true/false, 1/0, yes/no or y/n; ``tag_ids`` a JSON array of strings or a list split on ``;`` or ``,``).
- Blank and whitespace-only lines between rows are skipped. A line of only commas is a row (all absent).
- Quoting is parsed strictly (``csv.reader(strict=True)``): ``"a"b`` is an error, not a silent ``ab``.
- Quoted fields may hold commas, doubled quotes and newlines; a row's ``line`` is the physical line it starts
  on. The ``csv`` module only ever sees lines we hand it (``_LineFeed``), so we always know which physical
  lines a record was made of.

When a record cannot be parsed (a ``csv.Error`` such as ``',' expected after '"'``, end of file inside quotes,
a field over ``csv.field_size_limit()`` characters, an over-long line, or a record over ``max_line_bytes``
in total), its first line becomes an invalid row and the lines after that first line are read again as new
records. A quote opened by mistake therefore costs one row, not every row up to the next quote character.
A line that is not UTF-8 or holds a NUL byte does not break the parse: the row that contains it is invalid.
"""

from __future__ import annotations

import csv
import difflib
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ingest.errors import ManifestError
from ingest.manifest.cells import FAVORITE_EXPECTED, TAG_IDS_EXPECTED, parse_favorite, parse_tag_ids, shown
from ingest.manifest.detect import Detection
from ingest.manifest.lines import Line, decode_line, too_long_message
from ingest.manifest.options import ManifestOptions
from ingest.manifest.rows import KNOWN_FIELDS, ManifestRow, RowBuilder

Record = tuple[int, list[str] | None, str | None]  # (first line, cells or None if unparseable, problem)


@dataclass(frozen=True, slots=True)
class CsvHeader:
    """What the header row says, worked out once per manifest."""

    line: int
    width: int  # number of columns; every row must have this many cells
    fields: tuple[tuple[int, str], ...]  # (cell index, field) for each column that feeds a known field
    unknown: tuple[str, ...]  # columns that no field reads, in file order
    suggestions: dict[str, str]  # unknown column -> the field it is probably meant to be
    columns: dict[str, str]  # field -> the header's column name it is read from

    def raw(self, cells: list[str]) -> dict[str, Any]:
        """The row's non-empty cells by field name, as far as the row reaches."""
        return {name: cells[i] for i, name in self.fields if i < len(cells) and cells[i]}


def read_csv(
    lines: Iterator[Line],
    rows: RowBuilder,
    options: ManifestOptions,
    warn: Callable[..., None],
    detection: Detection,
) -> Iterator[ManifestRow]:
    """Yield one ``ManifestRow`` per data record; ``ManifestError`` first if the header is unusable."""
    records = _records(lines, options.max_line_bytes, detection.delimiter or ",")
    header = _parse_header(next(records, None), rows.manifest, options)
    detection.columns.update({field: column for field, column in header.columns.items() if column != field})
    detection.report(warn)
    if header.unknown:
        unknown = list(header.unknown)
        # At most 20 names (a hostile header can have a million columns), and how many there were.
        extra = {"did_you_mean": header.suggestions} if header.suggestions else {}
        warn(
            "manifest.unknown_columns",
            manifest=rows.manifest,
            line=header.line,
            columns=unknown[:20],
            count=len(unknown),
            **extra,
        )
    for line, cells, problem in records:
        yield _row(rows, header, line, cells, problem)


def check_csv_header(lines: Iterator[Line], name: str, options: ManifestOptions, delimiter: str) -> CsvHeader:
    """The manifest's header, or ``ManifestError`` saying why it is unusable."""
    return _parse_header(next(_records(lines, options.max_line_bytes, delimiter), None), name, options)


def _row(rows: RowBuilder, header: CsvHeader, line: int, cells: list[str] | None, problem: str | None) -> ManifestRow:
    if cells is None:
        return rows.invalid(line, None, problem or "row cannot be parsed")
    if problem is not None:
        return rows.invalid(line, None, problem, header.raw(cells))
    if len(cells) != header.width:
        return rows.invalid(line, None, f"row has {len(cells)} cells, header has {header.width}", header.raw(cells))
    fields: dict[str, Any] = {name: cells[i] for i, name in header.fields if cells[i]}
    typed = _typed(fields)
    if isinstance(typed, tuple):
        return rows.invalid(line, *typed, fields)
    return rows.build(line, typed, fields)


def _typed(fields: dict[str, Any]) -> dict[str, Any] | tuple[str, str]:
    """``fields`` with ``favorite`` and ``tag_ids`` converted from text, or (field, message) on failure."""
    if "favorite" not in fields and "tag_ids" not in fields:
        return fields
    typed = dict(fields)
    if "favorite" in fields:
        typed["favorite"] = parse_favorite(fields["favorite"])
        if typed["favorite"] is None:
            return "favorite", f"{FAVORITE_EXPECTED} (got {shown(fields['favorite'])})"
    if "tag_ids" in fields:
        typed["tag_ids"] = parse_tag_ids(fields["tag_ids"])
        if typed["tag_ids"] is None:
            return "tag_ids", f"{TAG_IDS_EXPECTED} (got {shown(fields['tag_ids'])})"
    return typed


def _parse_header(record: Record | None, name: str, options: ManifestOptions) -> CsvHeader:
    if record is None:
        raise ManifestError(f"{name}: no header row (the file is empty; a CSV manifest starts with a header)")
    line, cells, problem = record
    if cells is None or problem is not None:
        raise ManifestError(f"{name}: line {line}: the header row cannot be read ({problem})")
    names = [cell.strip() for cell in cells]
    field_of = {options.columns.get(field, field).strip().lower(): field for field in KNOWN_FIELDS}
    fields = tuple((i, field_of[column.lower()]) for i, column in enumerate(names) if column.lower() in field_of)
    feeding = Counter(field for _, field in fields)
    duplicates = [names[i] for i, field in fields if feeding[field] > 1]
    if duplicates:
        raise ManifestError(f"{name}: line {line}: duplicate column names in the header: {_listed(duplicates)}")
    unknown = tuple(column for column in names if column.lower() not in field_of)
    suggestions = _suggestions(unknown, field_of)
    if "url" not in feeding:
        url_column = options.columns.get("url", "url")
        hint = next((f" (did you mean {c!r}?)" for c, f in suggestions.items() if f == "url"), "")
        raise ManifestError(
            f"{name}: line {line}: the header has no {url_column!r} column{hint} (columns: {_listed(names)}); "
            "a delimited manifest starts with a header row (--column url=NAME maps another column)"
        )
    if unknown and options.strict_columns:
        raise ManifestError(
            f"{name}: line {line}: unknown columns {_listed(unknown)} (known: {_listed(list(field_of))})"
        )
    columns = {field: names[i] for i, field in fields}
    return CsvHeader(line, len(names), fields, unknown, suggestions, columns)


def _suggestions(unknown: tuple[str, ...], field_of: dict[str, str]) -> dict[str, str]:
    """For the first few unknown columns that look like a field's column (``urls``, ``prompts``), that field."""
    found: dict[str, str] = {}
    for column in unknown[:100]:
        match = difflib.get_close_matches(column.lower(), list(field_of), n=1, cutoff=0.75)
        if match:
            found[column] = field_of[match[0]]
    return found


def _listed(names: tuple[str, ...] | list[str], limit: int = 20) -> str:
    """Column names for a message, quoted, shortened, at most ``limit`` of them."""
    shown = ", ".join(repr(n if len(n) <= 40 else n[:40] + "…") for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


class _RecordBroken(Exception):
    """Raised through ``csv.reader`` by the line feed: the record being parsed cannot be completed."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.reason = reason


class _LineFeed:
    """The iterator ``csv.reader`` pulls text lines from; remembers the lines of the record being parsed."""

    __slots__ = ("_isolated_until", "_lines", "_max_bytes", "_pending", "problem", "record", "size")

    def __init__(self, lines: Iterator[Line], max_line_bytes: int) -> None:
        self._lines = lines  # physical lines not read yet
        self._pending: deque[Line] = deque()  # lines given back by a broken record; read before `_lines`
        self._max_bytes = max_line_bytes  # bound on one line, and on all lines of one record together
        self.record: list[Line] = []  # the lines of the record being parsed
        self.size = 0  # bytes in `record`
        self.problem: tuple[int, str] | None = None  # the first line in `record` that did not decode cleanly
        # Lines up to this number were given back by a broken record: each is re-read as a record of one line, so
        # that every line is parsed at most twice (else a quote opened on every line makes reading quadratic).
        self._isolated_until = 0

    def __iter__(self) -> _LineFeed:
        return self

    def __next__(self) -> str:
        if self.record and self.record[0][0] <= self._isolated_until:
            first = self.record[0][0]
            raise _RecordBroken(first, "a quoted field is not closed on this line (re-read after a broken row)")
        line = self._pending.popleft() if self._pending else next(self._lines)
        self.record.append(line)
        number, data = line
        if data is None:
            raise _RecordBroken(number, too_long_message(self._max_bytes))
        self.size += len(data)
        if self.size > self._max_bytes and len(self.record) > 1:
            raise _RecordBroken(number, f"row is longer than {self._max_bytes} bytes")
        text, problem = decode_line(data)
        if problem is not None and self.problem is None:
            self.problem = (number, problem)
        return text

    def start_record(self) -> None:
        """Forget the previous record."""
        self.record.clear()
        self.size = 0
        self.problem = None

    def give_back(self) -> None:
        """Re-read the broken record's lines after its first (the first may have opened a quote by mistake), each
        as a record of its own line."""
        if len(self.record) > 1:
            self._isolated_until = max(self._isolated_until, self.record[-1][0])
        self._pending.extendleft(reversed(self.record[1:]))

    def first_line(self) -> int:
        return self.record[0][0] if self.record else 0

    def last_line(self) -> int:
        return self.record[-1][0] if self.record else 0

    def is_blank(self, cells: list[str]) -> bool:
        """Whether the record just parsed was one line with nothing in it: blank, whitespace, or only empty cells
        (``,,,`` — what spreadsheets export below the data; it is not a row anyone meant)."""
        return len(self.record) == 1 and self.problem is None and not any(cell.strip() for cell in cells)


def _records(lines: Iterator[Line], max_line_bytes: int, delimiter: str) -> Iterator[Record]:
    """Every non-blank record as (first line, cells, problem); cells is ``None`` if it could not be parsed."""
    feed = _LineFeed(lines, max_line_bytes)
    reader = csv.reader(feed, strict=True, delimiter=delimiter)
    while True:
        feed.start_record()
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield feed.first_line(), None, _broken(f"CSV error: {exc}", feed.first_line(), feed.last_line())
            feed.give_back()
            continue
        except _RecordBroken as exc:
            yield feed.first_line(), None, _broken(exc.reason, feed.first_line(), exc.line)
            feed.give_back()
            continue
        if feed.is_blank(cells):
            continue
        yield feed.first_line(), cells, _problem(feed)


def _broken(reason: str, first: int, at: int) -> str:
    if at == first:
        return reason
    return f"{reason} (on line {at}, in a row that starts here: is a quoted field left open?)"


def _problem(feed: _LineFeed) -> str | None:
    if feed.problem is None:
        return None
    at, reason = feed.problem
    return reason if at == feed.first_line() else f"{reason} (on line {at}, inside this row)"
