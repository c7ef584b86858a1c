"""``.json`` manifests: an array of records (or of URL strings), or an object holding one array of records — read
with a streaming parser (ijson), so memory stays flat however large the file; a single record object is one record.

- Each element of the array is one record (``ingest.manifest.records``: keys, paths, fal outputs), on the physical
  line where it starts: the parser is fed at most one line per read, so the line being parsed is always known.
- An element that is a string is a URL (``["https://…/a.png", …]``); any other non-object is an invalid row.
- A top-level object: its first key whose value is an array of objects (``{"data": [...]}``, ``{"items": [...]}``)
  holds the records; fal output keys (``images``, ``videos``, ``masks``) do not count, so a single fal output
  saved as ``.json`` is one record, made into one item per file. An object with no such array is one record.
- An element larger than ``max_line_bytes`` is not built: it is skipped and becomes an invalid row.
- Malformed JSON ends the reading: one invalid row names the line, and the rest of the file is not read.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import ijson

from ingest.manifest.detect import Detection
from ingest.manifest.falshapes import SHAPES
from ingest.manifest.jsonl import kind_of
from ingest.manifest.lines import ByteStream
from ingest.manifest.options import ManifestOptions
from ingest.manifest.records import RecordMapper
from ingest.manifest.rows import ManifestRow, RowBuilder

FEED_CHUNK = 1 << 16  # most bytes handed to the parser per read (less when a line ends first)
_FAL_LIST_KEYS = frozenset(key for key, _, many in SHAPES if many)
Event = tuple[str, str, Any]


class _LineFeed:
    """What ijson reads from: one physical line (at most ``FEED_CHUNK`` bytes) per ``read``; knows the line."""

    __slots__ = ("_newlines", "_stream", "line", "offset")

    def __init__(self, stream: ByteStream) -> None:
        self._stream = stream
        self._newlines = 0  # line ends handed out so far
        self.line = 1  # the physical line of the bytes handed out last
        self.offset = 0  # bytes handed out so far

    def read(self, size: int = -1) -> bytes:
        data = self._stream.readline(FEED_CHUNK if size < 0 else min(size, FEED_CHUNK))
        self.line = self._newlines + 1
        self._newlines += data.count(b"\n")
        self.offset += len(data)
        return data


def read_json(
    stream: ByteStream,
    rows: RowBuilder,
    options: ManifestOptions,
    warn: Callable[..., None],
    detection: Detection,
) -> Iterator[ManifestRow]:
    """Yield the rows of every record of the JSON document in ``stream``."""
    feed = _LineFeed(stream)
    mapper = RecordMapper(rows, options, detection, warn)
    detection.report(warn)
    events: Iterator[Event] = ijson.parse(feed, use_float=True)
    try:
        yield from _document(events, feed, rows, mapper, options.max_line_bytes)
    except ijson.JSONError as exc:
        message = f"malformed JSON ({str(exc)[:200]}); the rest of the file is not read"
        yield rows.invalid(feed.line, None, message)


def _document(
    events: Iterator[Event], feed: _LineFeed, rows: RowBuilder, mapper: RecordMapper, limit: int
) -> Iterator[ManifestRow]:
    first = next(events, None)
    if first is None:
        return
    if first[1] == "start_array":
        yield from _elements(events, "item", feed, rows, mapper, limit)
        return
    if first[1] != "start_map":
        yield rows.invalid(feed.line, None, "expected a JSON array or object at the top of the file")
        return
    line, record = feed.line, {}
    for prefix, event, value in events:
        if event == "end_map" and prefix == "":
            break
        key = value
        nxt = next(events)
        if nxt[1] == "start_array" and key not in _FAL_LIST_KEYS:
            peek = next(events)
            if peek[1] == "start_map":
                yield from _elements(itertools.chain([peek], events), f"{nxt[0]}.item", feed, rows, mapper, limit)
                return
            events = itertools.chain([peek], events)
        record[key] = _value(nxt, events)
    yield from mapper.rows(line, record)


def _elements(
    events: Iterator[Event], prefix: str, feed: _LineFeed, rows: RowBuilder, mapper: RecordMapper, limit: int
) -> Iterator[ManifestRow]:
    """The rows of the array whose elements have ``prefix``, up to its end."""
    for event in events:
        if event[1] == "end_array" and event[0] == prefix.rpartition(".item")[0]:
            return
        line, start = feed.line, feed.offset
        value = _value(event, events, lambda start=start: feed.offset - start > limit)  # type: ignore[misc]
        if value is _TOO_LARGE:
            yield rows.invalid(line, None, f"record is longer than {limit} bytes")
        elif isinstance(value, dict):
            yield from mapper.rows(line, value)
        elif isinstance(value, str):
            yield from mapper.rows(line, {"url": value})
        else:
            yield rows.invalid(line, None, f"expected a JSON object (or a URL string), got {kind_of(value)}")


_TOO_LARGE: Any = object()


def _value(first: Event, events: Iterator[Event], too_large: Callable[[], bool] | None = None) -> Any:
    """The whole value that starts with event ``first``; ``_TOO_LARGE`` (its events consumed) past the bound."""
    if first[1] not in ("start_map", "start_array"):
        return first[2]
    builder = ijson.ObjectBuilder()
    builder.event(first[1], first[2])
    depth = 1
    for _, event, value in events:
        if event in ("start_map", "start_array"):
            depth += 1
        elif event in ("end_map", "end_array"):
            depth -= 1
        if builder is not None:
            builder.event(event, value)
            if too_large is not None and too_large():
                builder = None
        if depth == 0:
            break
    return builder.value if builder is not None else _TOO_LARGE
