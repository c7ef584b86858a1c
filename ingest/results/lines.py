"""The complete lines of a results file, each with the byte offset it starts at: the one place that decides where
a results file's records end.

A record is in the file once its newline is: a last line without one is torn (its writer was killed mid-write, or
is still writing) and is never read as a record. The resume index truncates it (``ingest.results.index.repair``);
``ingest report`` and ``ingest failed`` count it. A line longer than ``MAX_RECORD_BYTES`` is not a record of ours:
it is read past in bounded pieces, never held, so memory stays flat whatever the file holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

MAX_RECORD_BYTES = 32 << 20  # a longer line is not a record of ours (a 201 asset is capped at max_response_bytes)


class CompleteLines:
    """The complete lines of ``file`` from byte ``start`` (a line's start), as ``(offset, line)``; ``line`` is
    ``None`` for a line longer than ``limit``. Once iterated to the end, ``end`` is where the complete lines end and
    ``torn`` says whether a line without its newline starts there."""

    def __init__(self, file: BinaryIO, *, start: int = 0, limit: int = MAX_RECORD_BYTES) -> None:
        self._file = file
        self._limit = limit  # bytes read at once: the longest line held
        self.end = start  # the offset after the last complete line read
        self.torn = False  # the file ends at ``end`` in a line without its newline

    def __repr__(self) -> str:
        return f"CompleteLines(end={self.end}, torn={self.torn})"

    def __iter__(self) -> Iterator[tuple[int, bytes | None]]:
        file, limit, end = self._file, self._limit, self.end
        file.seek(end)
        try:
            while raw := file.readline(limit):
                start = end
                if len(raw) == limit and not raw.endswith(b"\n"):  # overlong: read past it
                    if not _skip_line(file):
                        self.torn = True
                        return
                    end = file.tell()
                    yield start, None
                    continue
                if not raw.endswith(b"\n"):
                    self.torn = True
                    return
                end += len(raw)
                yield start, raw
        finally:  # on every way out (the end, a torn line, a caller that stops early): no store per line
            self.end = end


def _skip_line(file: BinaryIO) -> bool:
    """Read past the rest of an overlong line; whether its newline was found (else the file ended first)."""
    while chunk := file.readline(1 << 20):
        if chunk.endswith(b"\n"):
            return True
    return False
