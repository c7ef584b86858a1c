"""Noticing a manifest rewritten under its reader."""

from __future__ import annotations

import os
from typing import BinaryIO

import structlog


class WatchedFile:
    """A manifest file that stops (reads as ended) when it is rewritten under the reader.

    An editor or a job that rewrites the file in place leaves our descriptor at the old byte offset in the new
    content: one garbage row, then wrong line numbers. Before every read the file's size and mtime are compared
    with those it had when opened (one ``fstat``, well under a microsecond; a read is one line); on a change the
    rest is not read and ``manifest.changed`` says so (the rows not read have no record: a run of the finished
    file sends them).
    """

    def __init__(self, file: BinaryIO, name: str) -> None:
        self._file = file
        self._name = name
        self._stamp = self._now()  # (size, mtime_ns) at open
        self.changed = False  # a change was noticed; reads now return b""

    def __repr__(self) -> str:
        return f"WatchedFile(name={self._name!r}, changed={self.changed})"

    def _now(self) -> tuple[int, int]:
        st = os.fstat(self._file.fileno())
        return st.st_size, st.st_mtime_ns

    def _still_same(self) -> bool:
        if self.changed:
            return False
        now = self._now()
        if now == self._stamp:
            return True
        self.changed = True
        structlog.get_logger("ingest.manifest").warning(
            "manifest.changed",
            manifest=self._name,
            size_at_open=self._stamp[0],
            size_now=now[0],
            hint="the file was rewritten while it was read; the rest of it was not read: rerun once it is complete",
        )
        return False

    def read(self, size: int = -1, /) -> bytes:
        return self._file.read(size) if self._still_same() else b""

    def readline(self, size: int = -1, /) -> bytes:
        return self._file.readline(size) if self._still_same() else b""

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        self._file.close()

    def seek(self, offset: int, whence: int = os.SEEK_SET, /) -> int:
        return self._file.seek(offset, whence)

    def __getattr__(self, name: str) -> object:  # tell, seekable, peek, …: the file's own
        return getattr(self._file, name)
