"""Physical lines of a manifest, read in bounded pieces: what both the CSV and the JSONL readers stand on.

A physical line ends at ``\\n`` (a ``\\r`` before it belongs to the ending; a lone ``\\r`` ends nothing).
Lines are numbered from 1, every line counts (blank ones too); the byte order mark, if any, was already taken off
by the source (``ingest.manifest.encoding``). A line longer than ``max_line_bytes`` (without its ending) is never
held in memory whole: it is yielded as ``None`` and the rest of it is skipped in ``SKIP_CHUNK``-sized reads, so
one absurd line costs at most ``max_line_bytes`` of memory and the lines after it are read normally.

A stream that breaks part way (a truncated or corrupt gzip file, an I/O error) raises ``ManifestError``
naming the manifest and the last line read: the file as a whole cannot be read, unlike a bad row.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Protocol

from ingest.errors import ManifestError

SKIP_CHUNK = 1 << 16  # read size while skipping the rest of an over-long line


class ByteStream(Protocol):
    """What is read from: a file opened ``rb``, a ``gzip.GzipFile``, or ``sys.stdin.buffer``."""

    def read(self, size: int = -1, /) -> bytes: ...

    def readline(self, size: int = -1, /) -> bytes: ...


Line = tuple[int, bytes | None]  # (1-based number, the line's bytes with its ending; None when over-long)


def physical_lines(stream: ByteStream, *, max_line_bytes: int, name: str) -> Iterator[Line]:
    """Yield ``(number, bytes)`` per physical line of ``stream``; ``(number, None)`` for an over-long one."""
    number = 0
    try:
        for number, data in enumerate(_raw_lines(stream, max_line_bytes), start=1):
            yield number, data
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise ManifestError(f"{name}: cannot be read after line {number} ({exc})") from exc


def too_long_message(max_line_bytes: int) -> str:
    """The reason given for a row on an over-long line."""
    return f"line is longer than {max_line_bytes} bytes"


def decode_line(data: bytes) -> tuple[str, str | None]:
    """A line's text and, if it is not a clean manifest line (not UTF-8, or has a NUL byte), why not.

    A bad line still gets a text (undecodable bytes and NULs become U+FFFD), so that a CSV parser can keep its
    place in the quoting; the row it belongs to is then reported invalid with the reason.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = data.decode("utf-8", "replace").replace("\0", "\ufffd")
        return text, f"line is not valid UTF-8 (byte offset {exc.start})"
    if "\0" in text:
        offset = data.index(b"\0")
        return text.replace("\0", "\ufffd"), f"line contains a NUL byte (byte offset {offset})"
    return text, None


def _raw_lines(stream: ByteStream, max_line_bytes: int) -> Iterator[bytes | None]:
    readline = stream.readline
    # Room for the longest allowed line plus "\r\n": anything that fills it without ending is over-long.
    limit = max_line_bytes + 2
    while data := readline(limit):
        if len(data) <= max_line_bytes or content_length(data) <= max_line_bytes:
            yield data
            continue
        if not data.endswith(b"\n"):
            skip_rest_of_line(stream)
        yield None


def content_length(data: bytes) -> int:
    """Length of a line without its ``\\n`` or ``\\r\\n`` ending."""
    if data.endswith(b"\r\n"):
        return len(data) - 2
    return len(data) - 1 if data.endswith(b"\n") else len(data)


def skip_rest_of_line(stream: ByteStream) -> None:
    while (chunk := stream.readline(SKIP_CHUNK)) and not chunk.endswith(b"\n"):
        pass
