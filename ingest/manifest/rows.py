"""From a manifest row's fields to a valid ``UploadRequest`` or an invalid row with one precise reason.

Both readers (``manifest_csv``, ``manifest_jsonl``) hand a ``RowBuilder`` the row's known fields, already
renamed through ``ManifestOptions.columns`` and already typed (CSV cells converted, JSON values as parsed).
The builder then, in order: takes out ``idempotency_key``; fills absent fields from ``defaults``; infers
``type`` from the URL's extension when it is still absent; validates against ``UploadRequest`` in pydantic's
strict mode (so ``{"url": 5}`` or ``"favorite": "yes"`` in JSON is an error, not a coercion); checks the key.

An invalid row reports the *first* problem only: its field (``None`` for a line-level problem) and what was
expected, e.g. ``RowError("prompt", "String should have at most 2000 characters")``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError

from ingest.manifest.cells import (
    FAVORITE_EXPECTED,
    TAG_IDS_EXPECTED,
    TYPE_BY_EXTENSION,
    TYPES_EXPECTED,
    infer_type,
    normalize_type,
    parse_favorite,
    parse_tag_ids,
    shown,
)
from ingest.manifest.media_sources import PLACEHOLDER_URL, check_source_url, source_url
from ingest.manifest.uri import iri_to_uri
from ingest.models import ASSET_TYPES, UploadRequest

if TYPE_CHECKING:
    from ingest.manifest.options import ManifestOptions

__all__ = [
    "FAVORITE_EXPECTED",
    "KNOWN_FIELDS",
    "TAG_IDS_EXPECTED",
    "TYPE_BY_EXTENSION",
    "ManifestRow",
    "RowBuilder",
    "RowError",
    "check_idempotency_key",
    "infer_type",
    "parse_favorite",
    "parse_tag_ids",
]

KNOWN_FIELDS = ("url", "type", "prompt", "collection_id", "favorite", "tag_ids", "idempotency_key")

KEY_MAX_LENGTH = 255
RAW_MAX_CHARS = 1000  # an invalid row keeps its raw values for the results file, each cut to about this size

TYPE_NOT_INFERRED = "missing, and could not be inferred from the URL extension (give 'image', 'video', 'audio' or '3d')"
NOT_DEFAULTABLE = ("url", "idempotency_key")  # a default for these would make every row the same item


@dataclass(frozen=True, slots=True)
class RowError:
    """Why a row is invalid: the offending field (``None`` for a line-level problem) and what was expected."""

    field: str | None
    message: str


@dataclass(frozen=True, slots=True)
class ManifestRow:
    """One data row of a manifest: ``request`` when valid, else ``error`` (and ``raw``, for the results file).

    ``line`` is the 1-based physical line the row starts on. ``idempotency_key`` is the row's own explicit,
    valid key, if it has one (also on an invalid row), else ``None``. ``index`` is the item's position in its
    record when a ``[*]`` path (or a fal output's ``images``) made several items of one record, else ``None``.
    """

    manifest: str
    line: int
    request: UploadRequest | None
    idempotency_key: str | None
    error: RowError | None
    raw: Mapping[str, object] | None
    index: int | None = None

    def describe(self) -> str:
        """``media.csv:17: field 'prompt': String should have at most 2000 characters`` (or ``…: valid``)."""
        where = f"{self.manifest}:{self.line}" + (f" [{self.index}]" if self.index is not None else "")
        if self.error is None:
            return f"{where}: valid"
        if self.error.field is None:
            return f"{where}: {self.error.message}"
        return f"{where}: field '{self.error.field}': {self.error.message}"


class RowBuilder:
    """Turns typed, renamed fields into ``ManifestRow``s for one manifest."""

    __slots__ = ("_defaults", "_infer", "_sources", "manifest")

    def __init__(self, manifest: str, options: ManifestOptions) -> None:
        self.manifest = manifest  # ManifestSource.name, copied into every row
        self._defaults = dict(options.defaults)  # field -> typed default value
        self._infer = options.infer_type  # infer an absent `type` from the URL extension
        self._sources = options.allow_sources  # a url may be a local path or a bucket object (rehost)

    def invalid(
        self,
        line: int,
        field: str | None,
        message: str,
        raw: Mapping[str, object] | None = None,
        index: int | None = None,
    ) -> ManifestRow:
        """An invalid row; ``raw`` is kept with long values cut short."""
        error = RowError(field, message)
        return ManifestRow(self.manifest, line, None, _raw_key(raw), error, shrink_raw(raw), index)

    def build(
        self, line: int, fields: dict[str, Any], raw: Mapping[str, object] | None = None, index: int | None = None
    ) -> ManifestRow:
        """Validate ``fields`` (known, typed); ``raw`` is what to keep if invalid (default: ``fields``)."""
        kept = fields if raw is None else raw
        source = source_url(fields) if self._sources else None
        if source is not None and (problem := check_source_url(source)) is not None:
            return self.invalid(line, "url", problem, kept, index)
        data: dict[str, Any] = _normalized(fields if source is None else {**fields, "url": PLACEHOLDER_URL})
        key: object = None
        if self._defaults or "idempotency_key" in data or data.get("type") == "":
            data, key = self._merged(data)
        inferred = False
        if self._infer and "type" not in data:
            data, inferred = _with_inferred_type(data if source is None else {**data, "url": source})
            data = data if source is None else {**data, "url": PLACEHOLDER_URL}
        try:
            request = UploadRequest.model_validate(data, strict=True)
        except ValidationError as exc:
            return self.invalid(line, *first_error(exc, type_was_inferred=inferred), kept, index)
        if source is not None:
            request = request.model_copy(update={"url": source})
        if key is None or key == "":
            return ManifestRow(self.manifest, line, request, None, None, None, index)
        problem = check_idempotency_key(key)
        if problem is not None:
            return self.invalid(line, "idempotency_key", problem, kept, index)
        return ManifestRow(self.manifest, line, request, str(key), None, None, index)

    def _merged(self, fields: dict[str, Any]) -> tuple[dict[str, Any], object]:
        """``fields`` over the defaults, without ``idempotency_key`` (returned apart) or an empty ``type``."""
        data = {**self._defaults, **fields}
        key = data.pop("idempotency_key", None)
        if fields.get("type") == "":  # an empty type counts as absent: the default, else inference, applies
            del data["type"]
            if "type" in self._defaults:
                data["type"] = self._defaults["type"]
        return data, key


def _normalized(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with ``url`` trimmed and mapped from an IRI, ``type`` read case-insensitively or from a MIME type
    (a copy when anything changes: the caller's dict may be the raw row)."""
    url, asset_type = fields.get("url"), fields.get("type")
    fix_url = isinstance(url, str) and (not url.isascii() or url[:1].isspace() or url[-1:].isspace())
    fix_type = isinstance(asset_type, str) and asset_type not in ASSET_TYPES and asset_type != ""
    if not (fix_url or fix_type):
        return fields
    data = dict(fields)
    if fix_url:
        data["url"] = iri_to_uri(str(url).strip())
    if fix_type:
        data["type"] = normalize_type(asset_type)
    return data


def check_idempotency_key(key: object) -> str | None:
    """``None`` if ``key`` is 1..255 printable ASCII characters without spaces, else what is wrong with it."""
    if not isinstance(key, str):
        return "Input should be a valid string"
    if not 1 <= len(key) <= KEY_MAX_LENGTH:
        return f"should have 1 to {KEY_MAX_LENGTH} characters (has {len(key)})"
    # For ASCII, isprintable() is exactly 0x20..0x7e; excluding the space leaves the visible characters.
    if not (key.isascii() and key.isprintable()) or " " in key:
        return "should contain only printable ASCII characters and no spaces"
    return None


def shrink_raw(raw: Mapping[str, object] | None) -> dict[str, object] | None:
    """A copy of ``raw`` fit for the results file: long strings cut, big or too-deep values as short text."""
    if raw is None:
        return None
    return {name: _shrink(value) for name, value in raw.items()}


def _shrink(value: object) -> object:
    if isinstance(value, str):
        return value if len(value) <= RAW_MAX_CHARS else value[:RAW_MAX_CHARS] + "…"
    if value is None or isinstance(value, bool | int | float):
        return value
    try:
        text = orjson.dumps(value)
    except orjson.JSONEncodeError:  # nested deeper than orjson writes (it reads deeper than it writes)
        return "<value nested too deeply>"
    if len(text) <= RAW_MAX_CHARS:
        return value
    return text[:RAW_MAX_CHARS].decode("utf-8", "ignore") + "…"


def _raw_key(raw: Mapping[str, object] | None) -> str | None:
    key = raw.get("idempotency_key") if raw is not None else None
    return key if isinstance(key, str) and key and check_idempotency_key(key) is None else None


def _with_inferred_type(data: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """``data`` with the inferred ``type`` (a copy: the caller's dict is the raw row); whether it tried."""
    url = data.get("url")
    if not isinstance(url, str):
        return data, False
    asset_type = infer_type(url)
    if asset_type is None:
        return data, True
    return {**data, "type": asset_type}, True


def first_error(exc: ValidationError, *, type_was_inferred: bool) -> tuple[str | None, str]:
    """The first pydantic error as (field, message); a validator's ``ValueError`` gives its own message."""
    error = exc.errors(include_url=False)[0]
    loc = error["loc"]
    name = str(loc[0]) if loc else None
    message = error["msg"]
    if error["type"] == "value_error" and "error" in error.get("ctx", {}):
        message = str(error["ctx"]["error"])
    elif name == "type" and error["type"] == "missing" and type_was_inferred:
        message = TYPE_NOT_INFERRED
    elif name == "type" and error["type"] == "literal_error":
        message = TYPES_EXPECTED
    if error["type"] not in _NO_VALUE_SHOWN and _is_scalar(error.get("input")):
        message += f" (got {shown(error['input'])})"
    if len(loc) > 1:
        message += f" (at {name}{''.join(f'[{part}]' for part in loc[1:])})"
    return name, message


# The message already says it all (value errors show where in the URL; a 2000-character prompt is not worth quoting).
_NO_VALUE_SHOWN = frozenset({"missing", "value_error", "string_too_long"})


def _is_scalar(value: object) -> bool:
    return isinstance(value, str | int | float | bool)
