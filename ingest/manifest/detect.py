"""What the front door inferred about one manifest, said once: ``manifest.detected``, with how to override it.

Readers fill a ``Detection`` as they learn (the format and encoding before the first line, the delimiter and the
header's columns from the header, the fal output shapes from the records) and call ``report`` once the header (or
the first record) has been read; later discoveries (a fal output shape first seen on line 900) are reported as
their own event, once per manifest each. ``ingest validate`` prints the same events per manifest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ingest.manifest.sniff import DELIMITER_NAMES

Warn = Callable[..., None]  # warn(event, **fields): how a reader reports manifest-level events

OVERRIDES = {
    "format": "--format",
    "encoding": "--encoding NAME",
    "delimiter": "--delimiter CHAR",
    "columns": "--column FIELD=SOURCE",
}


@dataclass(slots=True)
class Detection:
    """What was inferred about one manifest (and how: "extension", "content", "bom", "detected", "forced"…)."""

    manifest: str
    format: str
    format_how: str
    encoding: str = "utf-8"
    encoding_how: str = "default"
    line_ends: str = "lf"
    delimiter: str | None = None
    delimiter_how: str | None = None
    columns: dict[str, str] = field(default_factory=dict)  # field -> the column or path it is read from
    shapes: set[str] = field(default_factory=set)  # fal output shapes already reported
    reported: bool = False

    def summary(self) -> dict[str, Any]:
        """The fields of the ``manifest.detected`` event."""
        fields: dict[str, Any] = {
            "manifest": self.manifest,
            "format": f"{self.format} ({self.format_how})",
            "encoding": f"{self.encoding} ({self.encoding_how})",
            "line_ends": self.line_ends,
        }
        if self.delimiter is not None:
            fields["delimiter"] = f"{DELIMITER_NAMES.get(self.delimiter, repr(self.delimiter))} ({self.delimiter_how})"
        if self.columns:
            fields["columns"] = dict(self.columns)
        fields["override"] = ", ".join(
            flag for name, flag in OVERRIDES.items() if name != "delimiter" or self.delimiter is not None
        )
        return fields

    def report(self, warn: Warn) -> None:
        """Emit ``manifest.detected`` (once), and a warning when the encoding was a guess."""
        if self.reported:
            return
        self.reported = True
        warn("manifest.detected", **self.summary())
        if self.encoding_how == "detected":
            warn(
                "manifest.encoding_detected",
                manifest=self.manifest,
                encoding=self.encoding,
                hint=f"the file is not UTF-8; read as {self.encoding}. If accents look wrong, pass --encoding NAME",
            )

    def fal_shape(self, warn: Warn, shape: str, asset_type: str, line: int) -> None:
        """Report, once per shape, that records of a fal model output shape are read as one item per file."""
        if shape in self.shapes:
            return
        self.shapes.add(shape)
        warn(
            "manifest.fal_output",
            manifest=self.manifest,
            line=line,
            shape=shape,
            type=asset_type,
            hint="one item per media file, prompt from the record; --column url=PATH maps another shape",
        )
