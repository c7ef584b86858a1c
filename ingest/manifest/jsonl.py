"""JSONL (``.jsonl`` / ``.ndjson``) manifests: one JSON object per physical line.

- Blank and whitespace-only lines are skipped; every other line is exactly one row, valid or not.
- Values keep their JSON types and are validated strictly: ``{"url": 5}`` is an error, not ``"5"``;
  ``favorite`` must be a JSON boolean and ``tag_ids`` an array of strings; ``prompt`` and ``collection_id``
  may be ``null`` (the spec makes them nullable), ``type`` may not. A ``type`` of ``""`` and an
  ``idempotency_key`` of ``null`` or ``""`` count as absent; any other ``""`` is a value (an empty prompt
  is invalid).
- Keys are renamed through ``ManifestOptions.columns`` like CSV columns. Other keys are ignored with one
  ``manifest.unknown_columns`` warning per manifest, or, with ``strict_columns``, make their row invalid.
- A line that is not JSON (including one nested deeper than orjson's 1024 levels), not UTF-8, or not an
  object is an invalid row with ``field=None``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import orjson

from ingest.manifest.lines import Line, decode_line, too_long_message
from ingest.manifest.rows import KNOWN_FIELDS, ManifestOptions, ManifestRow, RowBuilder


class _KeyMap:
    """Splits a JSON object into known fields (renamed) and unknown keys."""

    __slots__ = ("_field_of", "_identity", "_known")

    def __init__(self, columns: Mapping[str, str]) -> None:
        self._field_of = {columns.get(field, field): field for field in KNOWN_FIELDS}  # key -> field
        self._known = frozenset(self._field_of)  # keys that feed a field
        self._identity = all(key == field for key, field in self._field_of.items())  # no renaming to do

    def split(self, obj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """(fields by name, unknown keys in object order); the object itself when nothing needs renaming."""
        if self._identity and self._known.issuperset(obj):
            return obj, []
        fields = {self._field_of[key]: value for key, value in obj.items() if key in self._known}
        return fields, [key for key in obj if key not in self._known]


def read_jsonl(
    lines: Iterator[Line], rows: RowBuilder, options: ManifestOptions, warn: Callable[..., None]
) -> Iterator[ManifestRow]:
    """Yield one ``ManifestRow`` per non-blank line."""
    keys = _KeyMap(options.columns)
    warned = False  # the unknown-keys warning is given once per manifest
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
            yield rows.invalid(number, None, f"expected a JSON object, got {_kind(obj)}")
            continue
        fields, unknown = keys.split(obj)
        if unknown and options.strict_columns:
            yield rows.invalid(number, unknown[0], "unknown field", {**fields, **_unknown_items(obj, unknown)})
            continue
        if unknown and not warned:
            warn(
                "manifest.unknown_columns",
                manifest=rows.manifest,
                line=number,
                columns=unknown[:20],
                count=len(unknown),
            )
            warned = True
        yield rows.build(number, fields)


def _not_json(data: bytes, exc: orjson.JSONDecodeError) -> str:
    """Why a line is not a JSON value: bad UTF-8 or a NUL byte (said precisely), or what the parser found."""
    problem = decode_line(data)[1]
    if problem is not None:
        return problem
    return f"malformed JSON: {exc.msg} (column {exc.colno})"


def _unknown_items(obj: dict[str, Any], unknown: list[str]) -> dict[str, Any]:
    return {key: obj[key] for key in unknown if key not in KNOWN_FIELDS}


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"
