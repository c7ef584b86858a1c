"""``ManifestOptions``: how to read a manifest, checked when built (a bad option is a ``ConfigError`` before any
reading)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import ValidationError

from ingest.errors import ConfigError
from ingest.manifest.cells import FAVORITE_EXPECTED, TAG_IDS_EXPECTED, parse_favorite, parse_tag_ids
from ingest.manifest.encoding import check_encoding_name
from ingest.manifest.rows import KNOWN_FIELDS, NOT_DEFAULTABLE, first_error
from ingest.models import UploadRequest


@dataclass(frozen=True, slots=True)
class ManifestOptions:
    """How to read a manifest. Checked when built: a bad option raises ``ConfigError`` before any reading.

    - ``strict_columns``: unknown CSV columns are a ``ManifestError``, unknown JSONL keys make their row
      invalid (instead of one ``manifest.unknown_columns`` warning per manifest).
    - ``max_line_bytes``: a longer physical line (ending excluded) is an invalid row; it is skipped, not read.
    - ``columns``: the column (CSV) or key (JSONL) a field is read from, e.g. ``{"url": "media_url"}``.
    - ``defaults``: values for fields that are absent (or, in CSV, empty); ``favorite``/``tag_ids`` defaults
      may be CSV-style text (``"yes"``, ``"a;b"``). Not allowed for ``url`` and ``idempotency_key``.
    - ``infer_type``: infer an absent or empty ``type`` from the URL path's extension (``TYPE_BY_EXTENSION``).
    - ``encoding``: force a text encoding instead of BOM / UTF-8 / detection (``ingest.manifest.encoding``).
    - ``delimiter``: force the delimiter of delimited text instead of sniffing it from the header.
    - ``fal_outputs``: recognise fal model outputs in JSON records without a ``url`` (``ingest.manifest.falshapes``).
    """

    strict_columns: bool = False
    max_line_bytes: int = 1 << 20
    columns: Mapping[str, str] = field(default_factory=dict)
    defaults: Mapping[str, object] = field(default_factory=dict)
    infer_type: bool = True
    allow_sources: bool = False  # a url may name media to rehost: a path, file://, s3://, gs://, az://
    encoding: str | None = None
    delimiter: str | None = None
    fal_outputs: bool = True

    def __post_init__(self) -> None:
        if self.max_line_bytes < 1:
            raise ConfigError(f"max_line_bytes must be at least 1 (got {self.max_line_bytes})")
        # Own copies (plain dicts, so that copy/pickle/asdict work): later changes to the caller's dicts are not seen.
        object.__setattr__(self, "columns", _checked_columns(self.columns))
        object.__setattr__(self, "defaults", _checked_defaults(self.defaults))
        if self.encoding is not None:
            check_encoding_name(self.encoding)
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise ConfigError(f"delimiter must be one character, e.g. ';' or '\\t' (got {self.delimiter!r})")


def _checked_columns(columns: Mapping[str, str]) -> dict[str, str]:
    """``columns`` if every key is a known field and no two fields read one column, else ``ConfigError``."""
    unknown = sorted(set(columns) - set(KNOWN_FIELDS))
    if unknown:
        raise ConfigError(f"columns: unknown field(s) {unknown}; known fields: {', '.join(KNOWN_FIELDS)}")
    readers: dict[str, str] = {}
    for name in KNOWN_FIELDS:
        column = columns.get(name, name)
        if not isinstance(column, str) or not column:
            raise ConfigError(f"columns: field '{name}' needs a non-empty column name")
        if column in readers:
            raise ConfigError(f"columns: fields '{readers[column]}' and '{name}' both read column '{column}'")
        readers[column] = name
    return dict(columns)


def _checked_defaults(defaults: Mapping[str, object]) -> dict[str, object]:
    """``defaults`` typed (CSV-style text accepted for favorite/tag_ids) and checked, else ``ConfigError``."""
    typed: dict[str, object] = {}
    for name, value in defaults.items():
        if name not in KNOWN_FIELDS or name in NOT_DEFAULTABLE:
            allowed = [f for f in KNOWN_FIELDS if f not in NOT_DEFAULTABLE]
            raise ConfigError(f"defaults: '{name}' cannot have a default; allowed: {', '.join(allowed)}")
        typed[name] = _typed_default(name, value)
    try:
        UploadRequest.model_validate({"url": "https://example.com/a", "type": "image", **typed}, strict=True)
    except ValidationError as exc:
        field_name, message = first_error(exc, type_was_inferred=False)
        raise ConfigError(f"defaults: '{field_name}': {message}") from None
    return typed


def _typed_default(name: str, value: object) -> object:
    if not isinstance(value, str) or name not in ("favorite", "tag_ids"):
        return value
    converted = parse_favorite(value) if name == "favorite" else parse_tag_ids(value)
    if converted is None:
        expected = FAVORITE_EXPECTED if name == "favorite" else TAG_IDS_EXPECTED
        raise ConfigError(f"defaults: '{name}': {expected} (got {value!r})")
    return converted
