"""The front door: a manifest file (or stdin) in, one ``ManifestRow`` per item out, streaming, constant memory.

A manifest lists the uploads to make, one item each, with the fields of ``UploadRequest`` plus an optional
``idempotency_key``: ``url``, ``type``, ``prompt``, ``collection_id``, ``favorite``, ``tag_ids``.

What is decided per manifest, each from the name or a bounded prefix of the content, each logged once
(``manifest.detected``, ``ingest.manifest.detect``) with the flag that overrides it:

- compression: gzip when the name ends ``.gz`` or the first bytes are gzip's magic number;
- format (``--format``): from the suffix (``.csv``, ``.tsv``, ``.jsonl``/``.ndjson``, ``.json``), by content for
  ``.txt``/``.list``/``.urls`` and stdin (``ingest.manifest.sniff``);
- encoding (``--encoding``): BOM, else UTF-8, else detected (``ingest.manifest.encoding``);
- line ends: LF, CRLF or CR, all read alike, line numbers physical;
- delimiter (``--delimiter``) of delimited text: sniffed from the header line.

A manifest path may also be a URL (``s3://``, ``gs://``, ``az://``, ``https://``; ``ingest.manifest.remote``):
it is read the same way, in ranged pieces, in the producer's worker thread.

Readers: ``delimited`` (CSV/TSV), ``jsonl``, ``jsonarray`` (``.json``), ``urllist``. Every data row comes out as
a valid ``UploadRequest`` or an invalid row with its line number, the field at fault and what was expected; a
bad row never stops the reader. Only a manifest that cannot be read at all (missing, not gzip after all, no
usable header) raises ``ManifestError``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

import structlog

from ingest.errors import ManifestError
from ingest.manifest.delimited import check_csv_header, read_csv
from ingest.manifest.detect import Detection
from ingest.manifest.encoding import PREFIX_BYTES, Encoding, PrefixedStream, Utf8Stream, choose_encoding
from ingest.manifest.jsonarray import read_json
from ingest.manifest.jsonl import read_jsonl
from ingest.manifest.lines import ByteStream, Line, physical_lines
from ingest.manifest.opening import count_lines, local_first_bytes, open_bytes
from ingest.manifest.options import ManifestOptions
from ingest.manifest.remote import display_name, first_bytes, is_remote, url_path
from ingest.manifest.rows import KNOWN_FIELDS, ManifestRow, RowBuilder, RowError
from ingest.manifest.skip import LineSkip
from ingest.manifest.sniff import (
    FORMATS,
    Format,
    first_line,
    format_from_content,
    format_from_name,
    line_ends,
    sniff_delimiter,
)
from ingest.manifest.urllist import read_urls

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

ManifestFormat = Format

STDIN_PATH = "-"
STDIN_NAME = "<stdin>"
GZIP_MAGIC = b"\x1f\x8b"
DEFAULT_OPTIONS = ManifestOptions()
_LINE_READERS = {"csv": read_csv, "tsv": read_csv, "jsonl": read_jsonl, "urls": read_urls}


@dataclass(frozen=True, slots=True)
class ManifestSource:
    """Where a manifest is read from and how: a path (``-`` for stdin), its format (``None``: decided by content
    when read), how the format was chosen, whether it is gzip, and (a URL) the CAs its https server's certificate
    must chain to (``--ca-bundle``; ``None``: the system's store)."""

    path: str
    format: ManifestFormat | None
    gzip: bool
    format_how: str = "extension"
    ca_bundle: str | None = None

    @property
    def name(self) -> str:
        """What rows and errors call this manifest: the path as given (a URL without its query), or ``<stdin>``."""
        return STDIN_NAME if self.is_stdin else display_name(self.path) if self.is_remote else self.path

    @property
    def is_stdin(self) -> bool:
        return self.path == STDIN_PATH

    @property
    def is_remote(self) -> bool:
        """Read from a bucket or a web server (``ingest.manifest.remote``)."""
        return is_remote(self.path)

    @property
    def reads_block(self) -> bool:
        """Whether a read may wait on something slower than a disk (stdin, the network): read it in a thread."""
        return self.is_stdin or self.is_remote

    @classmethod
    def open(cls, path: str, *, format: str | None = None, ca_bundle: str | None = None) -> ManifestSource:
        """Resolve ``path``'s format and compression, checking that it can be read; else ``ManifestError``."""
        if format is not None and format not in FORMATS:
            raise ManifestError(f"{path}: unknown manifest format {format!r} (expected one of {', '.join(FORMATS)})")
        forced = cast("ManifestFormat | None", format)
        how = "forced" if forced else "content"
        if path == STDIN_PATH:
            return cls(path, forced, gzip=False, format_how=how)
        remote = is_remote(path)
        if remote:
            magic = first_bytes(path, len(GZIP_MAGIC), ca_bundle=ca_bundle)
        else:
            magic = local_first_bytes(path, len(GZIP_MAGIC))
        name, named = (display_name(path), url_path(path)) if remote else (path, path)
        gz_suffix = named.lower().endswith(".gz")
        if gz_suffix and magic != GZIP_MAGIC:
            raise ManifestError(f"{name}: has a .gz suffix but is not gzip-compressed")
        gz = gz_suffix or magic == GZIP_MAGIC
        if forced is not None:
            return cls(path, forced, gz, "forced", ca_bundle)
        known, by_name = format_from_name(named)
        if not known:
            raise ManifestError(
                f"{name}: unknown manifest format (expected a .csv, .tsv, .txt, .json, .jsonl, .ndjson, .list or "
                f".urls name, optionally + .gz; or pass --format {'|'.join(FORMATS)})"
            )
        return cls(path, by_name, gz, "extension" if by_name else "content", ca_bundle)


@dataclass(frozen=True, slots=True)
class _Opened:
    """A manifest ready to read: UTF-8 bytes with \\n line ends (BOM skipped), and what was detected."""

    stream: ByteStream
    detection: Detection


def read_manifest(
    source: ManifestSource,
    options: ManifestOptions = DEFAULT_OPTIONS,
    *,
    warn: Callable[..., None] | None = None,
    skip: LineSkip | None = None,
) -> Iterator[ManifestRow]:
    """Yield every item of ``source`` in file order, valid or not; ``ManifestError`` if it cannot be read.

    ``warn(event, **fields)`` receives manifest-level events (``manifest.detected`` once, ``manifest.unknown_columns``
    and ``manifest.fal_output`` once each); by default ``manifest.detected`` is logged at info, others as warnings.
    """
    report = warn if warn is not None else _log
    with _prepared(source, options) as opened:
        rows = RowBuilder(source.name, options)
        detection = opened.detection
        if detection.format == "json":
            yield from read_json(opened.stream, rows, options, report, detection)
            return
        lines: Iterator[Line]
        if skip is not None:  # rows an earlier run finished, dropped by their bytes before any decoding
            context = f"{detection.format}|{detection.encoding}|{detection.line_ends}|{detection.delimiter}".encode()
            csv = detection.format in ("csv", "tsv")
            lines = skip.read(
                opened.stream, csv=csv, context=context, max_line_bytes=options.max_line_bytes, name=source.name
            )
        else:
            lines = physical_lines(opened.stream, max_line_bytes=options.max_line_bytes, name=source.name)
        yield from _LINE_READERS[detection.format](lines, rows, options, report, detection)


def preflight(source: ManifestSource, options: ManifestOptions = DEFAULT_OPTIONS) -> Detection | None:
    """Check before a run that ``source`` opens and (delimited text) has a usable header; else ``ManifestError``.
    Returns what was detected. Does nothing for stdin, which can only be read once.
    """
    if source.is_stdin:
        return None
    with _prepared(source, options) as opened:
        detection = opened.detection
        if detection.format in ("csv", "tsv"):
            lines = physical_lines(opened.stream, max_line_bytes=options.max_line_bytes, name=source.name)
            check_csv_header(lines, source.name, options, detection.delimiter or ",")
        return detection


def count_rows(source: ManifestSource) -> int | None:
    """A quick estimate of the number of data rows, for a progress total; ``None`` for stdin, JSON documents and
    remote manifests (counting would read them twice).

    It counts physical lines (less the header, for delimited text) without parsing them, so it is an estimate:
    blank lines and the extra lines of quoted fields are counted, the items of an exploded record are not.
    """
    if source.reads_block or source.format == "json":
        return None
    with open_bytes(source) as stream:
        lines = count_lines(stream, source.name)
    return max(lines - 1, 0) if source.format in ("csv", "tsv") else lines


@contextmanager
def _prepared(source: ManifestSource, options: ManifestOptions) -> Iterator[_Opened]:
    """Open ``source``, decide encoding, line ends, format and delimiter from its first bytes."""
    with open_bytes(source) as raw:
        seekable = _seekable(raw) and not source.is_remote  # a GzipFile says it seeks, but over the network not
        prefix = _peek(raw, seekable)
        stream: ByteStream = raw if seekable else PrefixedStream(prefix, raw)
        encoding = choose_encoding(prefix, options.encoding)
        text = prefix[encoding.bom :].decode(encoding.name, "replace")
        ends = line_ends(text)
        if encoding.bom:
            stream.read(encoding.bom)
        if not encoding.is_utf8 or ends == "cr":
            stream = Utf8Stream(stream, encoding, translate_cr=ends == "cr")
        detection = _detection(source, options, encoding, ends, text)
        yield _Opened(stream, detection)


def _detection(source: ManifestSource, options: ManifestOptions, encoding: Encoding, ends: str, text: str) -> Detection:
    format_ = source.format or format_from_content(text)
    detection = Detection(source.name, format_, source.format_how, encoding.name, encoding.how, ends)
    if format_ in ("csv", "tsv"):
        if options.delimiter is not None:
            detection.delimiter, detection.delimiter_how = options.delimiter, "forced"
        else:
            header = first_line(text)
            sniffed = sniff_delimiter(header)
            if format_ == "tsv" and sniffed == "," and "," not in header:
                sniffed = "\t"
            detection.delimiter, detection.delimiter_how = sniffed, "sniffed from the header"
    return detection


def _peek(raw: ByteStream, seekable: bool) -> bytes:
    """Up to ``PREFIX_BYTES`` of the start; a seekable stream is rewound, others are re-read by the caller."""
    try:
        prefix = raw.read(PREFIX_BYTES)
        if seekable:
            raw.seek(0)  # type: ignore[attr-defined]
    except (OSError, EOFError, zlib.error) as exc:
        raise ManifestError(f"cannot be read ({exc})") from exc
    return prefix


def _seekable(stream: ByteStream) -> bool:
    seekable = getattr(stream, "seekable", None)
    return bool(seekable and seekable())


def _log(event: str, **fields: object) -> None:
    logger = structlog.get_logger("ingest.manifest")
    (logger.info if event == "manifest.detected" else logger.warning)(event, **fields)
