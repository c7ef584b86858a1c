"""Plain URL lists (``.txt``, ``.list``, ``.urls`` recognised by content, or ``--format urls``): one URL per line.

Blank lines and lines starting with ``#`` are skipped; each other line, trimmed, is one item's ``url``, its ``type``
inferred from the extension (a line whose type cannot be inferred is invalid, as in any manifest; defaults from
``[manifest.defaults]`` apply). Line numbers are physical.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ingest.manifest.detect import Detection
from ingest.manifest.lines import Line, decode_line, too_long_message
from ingest.manifest.options import ManifestOptions
from ingest.manifest.rows import ManifestRow, RowBuilder


def read_urls(
    lines: Iterator[Line],
    rows: RowBuilder,
    options: ManifestOptions,
    warn: Callable[..., None],
    detection: Detection,
) -> Iterator[ManifestRow]:
    """Yield one row per URL line."""
    detection.report(warn)
    for number, data in lines:
        if data is None:
            yield rows.invalid(number, None, too_long_message(options.max_line_bytes))
            continue
        text, problem = decode_line(data)
        url = text.strip()
        if not url or url.startswith("#"):
            continue
        if problem is not None:
            yield rows.invalid(number, None, problem, {"url": url})
            continue
        yield rows.build(number, {"url": url})
