"""From one parsed JSON record (a JSONL line, an element of a JSON array) to its rows: usually one, several when a
``[*]`` path or a fal output shape makes one item per element.

In order of precedence:

1. ``columns`` sources that are JSON paths (``--column url=images[*].url``): every field with a path is read
   through it; an exploding path (``[*]``) makes one item per element, each with its ``index``; a path without
   ``[*]`` gives the same value to every item. Other fields are read by key as usual. Unknown keys are not warned
   about (a record read through paths is expected to hold more than the item).
2. A record with no ``url`` key that holds a fal model output (``ingest.manifest.falshapes``): one item per media
   file, reported once per manifest and shape.
3. Otherwise the record's keys, renamed through ``columns``; unknown keys warned about once per manifest (or, with
   ``strict_columns``, make the row invalid).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ingest.manifest.detect import Detection
from ingest.manifest.falshapes import SHAPE_NAMES, output_items
from ingest.manifest.options import ManifestOptions
from ingest.manifest.paths import MISSING, JsonPath, is_path, parse_path
from ingest.manifest.rows import KNOWN_FIELDS, ManifestRow, RowBuilder

NO_URL = "Field required: the record has no 'url' and no fal output ({shapes}); --column url=PATH maps one"


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


class RecordMapper:
    """Turns the JSON records of one manifest into rows (see the module docstring)."""

    __slots__ = ("_builder", "_detection", "_fal", "_keys", "_paths", "_strict", "_warn", "_warned")

    def __init__(
        self, builder: RowBuilder, options: ManifestOptions, detection: Detection, warn: Callable[..., None]
    ) -> None:
        paths = {field: source for field, source in options.columns.items() if is_path(source)}
        self._paths: dict[str, JsonPath] = {field: parse_path(source) for field, source in paths.items()}
        plain = {field: source for field, source in options.columns.items() if field not in paths}
        # A field read through a path is not also read by key (its own name may be a key of the record).
        self._keys = _KeyMap({**plain, **{field: f"\0{field}" for field in paths}})
        self._builder = builder
        self._detection = detection  # where the fal shapes seen are noted
        self._warn = warn
        self._strict = options.strict_columns
        self._fal = options.fal_outputs and "url" not in options.columns  # recognise fal outputs
        self._warned = False  # the unknown-keys warning is given once per manifest
        detection.columns.update(paths)

    def rows(self, line: int, obj: dict[str, Any]) -> Iterator[ManifestRow]:
        """The rows of the record that starts on ``line``."""
        if self._paths:
            yield from self._through_paths(line, obj)
            return
        if self._fal and "url" not in obj:
            items = output_items(obj)
            if items:
                for shape, index, fields in items:
                    self._detection.fal_shape(self._warn, shape, fields["type"], line)
                    yield self._builder.build(line, fields, index=index)
                return
            yield self._builder.invalid(line, "url", NO_URL.format(shapes=", ".join(SHAPE_NAMES[:4]) + ", …"), obj)
            return
        fields, unknown = self._keys.split(obj)
        if unknown and self._strict:
            unknown_items = {key: obj[key] for key in unknown if key not in KNOWN_FIELDS}
            yield self._builder.invalid(line, unknown[0], "unknown field", {**fields, **unknown_items})
            return
        if unknown and not self._warned:
            self._warned = True
            self._warn(
                "manifest.unknown_columns",
                manifest=self._builder.manifest,
                line=line,
                columns=unknown[:20],
                count=len(unknown),
            )
        yield self._builder.build(line, fields)

    def _through_paths(self, line: int, obj: dict[str, Any]) -> Iterator[ManifestRow]:
        fields, _ = self._keys.split(obj)
        found = {field: path.resolve(obj) for field, path in self._paths.items()}
        lists = {field: value for field, value in found.items() if self._paths[field].explodes}
        single = {field: value for field, value in found.items() if field not in lists and value is not MISSING}
        if not lists:
            yield self._builder.build(line, {**fields, **single})
            return
        count = max((len(value) for value in lists.values() if value is not MISSING), default=0)
        if count == 0:
            paths = ", ".join(self._paths[field].text for field in lists)
            yield self._builder.invalid(line, next(iter(lists)), f"{paths}: no element in this record", obj)
            return
        for index in range(count):
            item = {**fields, **single}
            for field, values in lists.items():
                if values is not MISSING and index < len(values) and values[index] is not MISSING:
                    item[field] = values[index]
            yield self._builder.build(line, item, index=index)
