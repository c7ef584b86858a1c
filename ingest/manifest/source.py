"""Streaming manifest readers: a CSV or JSONL file in, one ``ManifestRow`` per data row out, constant memory.

A manifest lists the uploads to make, one row each, with the fields of ``UploadRequest`` plus an optional
``idempotency_key``: ``url``, ``type``, ``prompt``, ``collection_id``, ``favorite``, ``tag_ids``.

Formats (chosen from the extension, or given explicitly; always given for stdin, ``-``):

- ``.csv``: a header row naming the columns, then one row per record (``ingest.manifest.delimited``).
- ``.jsonl`` / ``.ndjson``: one JSON object per line (``ingest.manifest.jsonl``).
- either with ``.gz`` appended: gzip-compressed. A file whose first bytes are gzip's magic number is read as
  gzip whatever its name.

Both are UTF-8, with or without a byte order mark. Every data row comes out as exactly one ``ManifestRow``:
either a valid ``UploadRequest`` or an invalid row with its line number, the field at fault and what was
expected. A bad row never stops the reader and never hides the rows around it. Only a manifest that cannot
be read at all (missing, not gzip after all, no usable CSV header) raises ``ManifestError``.

Rows are built the same way for both formats (``ingest.manifest.rows``): fields renamed through
``ManifestOptions.columns``, absent ones filled from ``defaults``, ``type`` inferred from the URL's extension
when still absent, then strict validation against ``UploadRequest``.

Memory stays flat however long the manifest: lines are read one at a time, and a line longer than
``max_line_bytes`` is skipped in bounded chunks rather than read whole (``ingest.manifest.lines``).
"""

from __future__ import annotations

import gzip
import sys
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, cast

import structlog

from ingest.errors import ManifestError
from ingest.manifest.delimited import check_csv_header, read_csv
from ingest.manifest.jsonl import read_jsonl
from ingest.manifest.lines import ByteStream, physical_lines
from ingest.manifest.rows import KNOWN_FIELDS, ManifestOptions, ManifestRow, RowBuilder, RowError

__all__ = [
    "KNOWN_FIELDS",
    "ManifestFormat",
    "ManifestOptions",
    "ManifestRow",
    "ManifestSource",
    "RowError",
    "count_rows",
    "preflight",
    "read_manifest",
]

ManifestFormat = Literal["csv", "jsonl"]

STDIN_PATH = "-"
STDIN_NAME = "<stdin>"
GZIP_MAGIC = b"\x1f\x8b"
COUNT_CHUNK = 1 << 20  # read size when counting lines
_FORMAT_BY_SUFFIX: dict[str, ManifestFormat] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
DEFAULT_OPTIONS = ManifestOptions()


@dataclass(frozen=True, slots=True)
class ManifestSource:
    """Where a manifest is read from and how: a path (``-`` for stdin), its format, whether it is gzip."""

    path: str
    format: ManifestFormat
    gzip: bool

    @property
    def name(self) -> str:
        """What rows and errors call this manifest: the path as given, or ``<stdin>``."""
        return STDIN_NAME if self.is_stdin else self.path

    @property
    def is_stdin(self) -> bool:
        return self.path == STDIN_PATH

    @classmethod
    def open(cls, path: str, *, format: ManifestFormat | None = None) -> ManifestSource:
        """Resolve ``path``'s format and compression, checking that it can be read; else ``ManifestError``."""
        if format is not None and format not in ("csv", "jsonl"):
            raise ManifestError(f"{path}: unknown manifest format {format!r} (expected csv or jsonl)")
        if path == STDIN_PATH:
            if format is None:
                raise ManifestError(f"{STDIN_NAME}: stdin needs --format (csv or jsonl)")
            return cls(path, format, gzip=False)
        magic = _first_bytes(path, len(GZIP_MAGIC))
        resolved = format or _format_from_suffix(path)
        gz_suffix = path.lower().endswith(".gz")
        if gz_suffix and magic != GZIP_MAGIC:
            raise ManifestError(f"{path}: has a .gz suffix but is not gzip-compressed")
        return cls(path, resolved, gzip=gz_suffix or magic == GZIP_MAGIC)


def read_manifest(
    source: ManifestSource,
    options: ManifestOptions = DEFAULT_OPTIONS,
    *,
    warn: Callable[..., None] | None = None,
) -> Iterator[ManifestRow]:
    """Yield every data row of ``source`` in file order, valid or not; ``ManifestError`` if it cannot be read.

    ``warn(event, **fields)`` receives manifest-level warnings (``manifest.unknown_columns``, once per
    manifest); by default they go to structlog.
    """
    report = warn if warn is not None else structlog.get_logger().warning
    read_rows = read_csv if source.format == "csv" else read_jsonl
    with _opened(source) as stream:
        lines = physical_lines(stream, max_line_bytes=options.max_line_bytes, name=source.name)
        yield from read_rows(lines, RowBuilder(source.name, options), options, report)


def preflight(source: ManifestSource, options: ManifestOptions = DEFAULT_OPTIONS) -> None:
    """Check before a run that ``source`` opens and (CSV) has a usable header; else ``ManifestError``.

    Does nothing for stdin, which can only be read once.
    """
    if source.is_stdin:
        return
    with _opened(source) as stream:
        lines = physical_lines(stream, max_line_bytes=options.max_line_bytes, name=source.name)
        if source.format == "csv":
            check_csv_header(lines, source.name, options)
        else:
            next(lines, None)


def count_rows(source: ManifestSource) -> int | None:
    """A quick estimate of the number of data rows, for a progress total; ``None`` for stdin.

    It counts physical lines (less the header, for CSV) without parsing them, so it is an upper bound:
    blank lines and the extra lines of quoted CSV fields that contain newlines are counted too.
    """
    if source.is_stdin:
        return None
    with _opened(source) as stream:
        lines = _count_lines(stream, source.name)
    return max(lines - 1, 0) if source.format == "csv" else lines


def _count_lines(stream: ByteStream, name: str) -> int:
    newlines, last = 0, b"\n"
    try:
        while chunk := stream.read(COUNT_CHUNK):
            newlines += chunk.count(b"\n")
            last = chunk[-1:]
    except (OSError, EOFError, zlib.error) as exc:
        raise ManifestError(f"{name}: cannot be read ({exc})") from exc
    return newlines + (last != b"\n")


@contextmanager
def _opened(source: ManifestSource) -> Iterator[ByteStream]:
    """The manifest's bytes, decompressed; stdin is borrowed, not closed."""
    if source.is_stdin:
        yield sys.stdin.buffer
        return
    try:
        file = open(source.path, "rb")  # noqa: SIM115 - closed by the `with` below, after the error mapping
    except OSError as exc:
        raise ManifestError(f"{source.path}: cannot be opened ({exc.strerror or exc})") from exc
    with file:
        if not source.gzip:
            yield file
            return
        with gzip.GzipFile(fileobj=file, mode="rb") as unzipped:
            yield cast(ByteStream, unzipped)


def _first_bytes(path: str, size: int) -> bytes:
    """The first ``size`` bytes of the file at ``path``; ``ManifestError`` if it is missing or unreadable."""
    try:
        with open(path, "rb") as file:
            return file.read(size)
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ManifestError(f"{path}: is a directory, not a manifest file") from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


def _format_from_suffix(path: str) -> ManifestFormat:
    lowered = path.lower().removesuffix(".gz")
    for suffix, format_ in _FORMAT_BY_SUFFIX.items():
        if lowered.endswith(suffix):
            return format_
    raise ManifestError(
        f"{path}: unknown manifest format (expected a .csv, .jsonl or .ndjson name, optionally + .gz; or pass --format)"
    )
