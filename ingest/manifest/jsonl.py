"""JSONL (``.jsonl`` / ``.ndjson``) manifests: one JSON object per physical line.

- Blank and whitespace-only lines are skipped; every other line is one row, valid or not (or one per element
  when a ``[*]`` path or a fal output makes several items of it, each with the line's number).
- Values keep their JSON types and are validated strictly: ``{"url": 5}`` is an error, not ``"5"``;
  ``favorite`` must be a JSON boolean and ``tag_ids`` an array of strings; ``prompt`` and ``collection_id``
  may be ``null`` (the spec makes them nullable), ``type`` may not. A ``type`` of ``""`` and an
  ``idempotency_key`` of ``null`` or ``""`` count as absent; any other ``""`` is a value (an empty prompt
  is invalid).
- Keys are renamed through ``ManifestOptions.columns`` like CSV columns (or read through JSON paths, and fal model
  outputs are recognised: ``ingest.manifest.records``). Other keys are ignored with one
  ``manifest.unknown_columns`` warning per manifest, or, with ``strict_columns``, make their row invalid.
- A line that is not JSON (including one nested deeper than orjson's 1024 levels), not UTF-8, or not an
  object is an invalid row with ``field=None``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import orjson

from ingest.manifest.detect import Detection
from ingest.manifest.lines import Line, decode_line, too_long_message
from ingest.manifest.options import ManifestOptions
from ingest.manifest.records import RecordMapper
from ingest.manifest.rows import ManifestRow, RowBuilder


def read_jsonl(
    lines: Iterator[Line],
    rows: RowBuilder,
    options: ManifestOptions,
    warn: Callable[..., None],
    detection: Detection,
) -> Iterator[ManifestRow]:
    """Yield the rows of every non-blank line (one, or one per element of an exploded record)."""
    mapper = RecordMapper(rows, options, detection, warn)
    detection.report(warn)
    for number, data in lines:
        if data is None:
            yield rows.invalid(number, None, too_long_message(options.max_line_bytes))
            continue
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            if data.strip():
                yield rows.invalid(number, None, _not_json(data, exc))
            continue
        if type(obj) is not dict:
            yield rows.invalid(number, None, f"expected a JSON object, got {kind_of(obj)}")
            continue
        yield from mapper.rows(number, obj)


def _not_json(data: bytes, exc: orjson.JSONDecodeError) -> str:
    """Why a line is not a JSON value: bad UTF-8 or a NUL byte (said precisely), or what the parser found."""
    problem = decode_line(data)[1]
    if problem is not None:
        return problem
    return f"malformed JSON: {exc.msg} (column {exc.colno})"


def kind_of(value: object) -> str:
    """``an array``, ``a string``…: what a JSON value is, for a message."""
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"
