"""This run's first occurrence of every key, exact, in 12 bytes of memory per slot (issue 13).

``SeenKeys.first(key, fp, manifest, line, body)`` records the first row with ``key`` and returns ``None``, or, for a
later row with the same key, returns where the first one was (``First``). Memory holds a ``KeyTable`` of the key's
64-bit fingerprint → a 32-bit record number: 12 bytes a slot, 14 a key at the table's 85% load. The records
themselves — the key in full, the first row's manifest number, line and 64 bits of its body's SHA-256 — are 32-byte
units appended to a spill (``Spill``: a buffer in memory, then an unlinked temporary file), read back only when a
fingerprint is found again.

A fingerprint found again is confirmed against the stored key, never trusted: a true repeat is a duplicate (or a
conflict, if the body differs); a different key with the same fingerprint (a collision, about 1 in 10⁵ runs of 10⁷
keys) is a new key, kept exactly in a small dict (``_others``) beside the table. So no collision ever makes a
unique row a duplicate, and no repeat is missed.

Key encoding in a record's 16-byte key area, by ``tag``: a canonical lowercase UUID (every derived key) as its 16
bytes; a key of at most 15 UTF-8 bytes inline after its length; a longer one in units of its own just after its
record (the area then holds their first unit's number and the key's byte length).
"""

from __future__ import annotations

import os
import re
import struct
import sys
import tempfile
from collections.abc import Callable
from typing import IO, NamedTuple

import structlog

from ingest.keytable import KeyTable

log = structlog.get_logger("ingest.admission.seen")

UNIT = 32  # bytes per spill unit; a record is one unit
FLUSH_BYTES = 1 << 20  # buffered before a write to the spill file
_RECORD = struct.Struct("<16sQQ")  # key area, body fingerprint, meta = line << 20 | manifest << 2 | tag
_LONG = struct.Struct("<QQ")  # a long key's first unit and byte length
_INLINE, _UUID, _LONG_KEY = 0, 1, 2
_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MAX_MANIFESTS = 1 << 18
MAX_LINE = (1 << 44) - 1


class First(NamedTuple):
    """Where a key was first seen this run."""

    manifest: int  # the caller's manifest number
    line: int
    body: int  # the caller's body fingerprint (64 bits)


class Spill:
    """Append-only 32-byte units: the newest in memory, the rest in an unlinked temporary file."""

    __slots__ = ("_dir", "_fd", "_file", "_flush_bytes", "_flushed", "_tail", "count")

    def __init__(self, directory: str | None = None, *, flush_bytes: int = FLUSH_BYTES) -> None:
        self._dir = directory  # where the file is made (default: the system's temporary directory)
        self._flush_bytes = flush_bytes  # tail size that triggers a write
        self._file: IO[bytes] | None = None  # keeps the temporary file open (and alive)
        self._fd = -1
        self._flushed = 0  # units in the file
        self._tail = bytearray()  # units not yet written
        self.count = 0  # units stored

    def __repr__(self) -> str:
        return f"Spill(units={len(self)}, on_disk={self._flushed})"

    def __len__(self) -> int:
        return self.count

    def append(self, data: bytes) -> None:
        """Store ``data`` (a whole number of units) at unit ``count``."""
        self._tail += data
        self.count += len(data) // UNIT
        if len(self._tail) >= self._flush_bytes:
            self._flush()

    def read(self, unit: int, count: int = 1) -> bytes:
        """``count`` units from ``unit`` on (all from one ``append``)."""
        if unit >= self._flushed:
            start = (unit - self._flushed) * UNIT
            return bytes(self._tail[start : start + count * UNIT])
        return os.pread(self._fd, count * UNIT, unit * UNIT)

    def __del__(self) -> None:
        self.close()  # a table dropped unclosed (replaced, or its run over) frees its file, without a warning

    def close(self) -> None:
        """Drop the file (it has no name: closing it frees the disk space)."""
        file, self._file = self._file, None
        if file is not None:
            file.close()
            self._fd = -1

    def _flush(self) -> None:
        try:
            if self._file is None:
                file = tempfile.TemporaryFile(prefix="ingest-seen-", dir=self._dir, buffering=0)  # noqa: SIM115
                self._file, self._fd = file, file.fileno()
            with memoryview(self._tail) as view:
                written = 0
                while written < len(view):
                    written += os.pwrite(self._fd, view[written:], self._flushed * UNIT + written)
        except OSError as exc:
            # No room or no temporary directory: keep the rest in memory (32 bytes a key more) rather than fail
            self._flush_bytes = sys.maxsize
            log.warning("seen.spill_failed", directory=self._dir or tempfile.gettempdir(), error=str(exc))
            return
        self._flushed += len(self._tail) // UNIT
        self._tail = bytearray()


class SeenKeys:
    """Key → its first occurrence, exact; see the module docstring."""

    __slots__ = ("_fingerprint", "_others", "_spill", "table")

    def __init__(
        self,
        *,
        expected: int = 0,
        fingerprint: Callable[[str], int] | None = None,
        directory: str | None = None,
        flush_bytes: int = FLUSH_BYTES,
    ) -> None:
        self.table = KeyTable(value_code="I", expected=expected)  # key fingerprint -> record unit
        self._spill = Spill(directory, flush_bytes=flush_bytes)
        self._others: dict[str, int] = {}  # key -> record unit, for keys whose fingerprint an earlier key holds
        self._fingerprint = fingerprint  # replaces the caller's fingerprint (tests force collisions with it)

    def __repr__(self) -> str:
        return f"SeenKeys(table={self.table!r}, spill={self._spill!r}, collisions={len(self._others)})"

    def __len__(self) -> int:
        return len(self.table) + len(self._others)

    @property
    def spill(self) -> Spill:
        """Where the records are."""
        return self._spill

    @property
    def collisions(self) -> int:
        """Keys kept apart because another key has their fingerprint."""
        return len(self._others)

    def first(self, key: str, fp: int, *, manifest: int, line: int, body: int) -> First | None:
        """``None`` the first time ``key`` is seen (then it is recorded with ``manifest``, ``line``, ``body``),
        else where it was first seen. ``fp`` is ``keytable.fingerprint(key)``."""
        if self._fingerprint is not None:
            fp = self._fingerprint(key) or 1
        spill = self._spill
        unit = self.table.put_new(fp, spill.count)  # the record goes at the spill's end
        if unit is None:
            spill.append(self._record(key, manifest, line, body, spill.count))
            return None
        found = self._match(unit, key)
        if found is not None:
            return found
        unit = self._others.get(key)  # a collision: the fingerprint belongs to another key
        if unit is not None:
            found = self._match(unit, key)
            assert found is not None
            return found
        self._others[key] = spill.count
        spill.append(self._record(key, manifest, line, body, spill.count))
        return None

    def close(self) -> None:
        """Free the spill file."""
        self._spill.close()

    @staticmethod
    def _record(key: str, manifest: int, line: int, body: int, unit: int) -> bytes:
        """The units of ``key``'s record, to be stored at ``unit``: the record, then a long key's own units."""
        if not 0 <= manifest < MAX_MANIFESTS or not 0 <= line <= MAX_LINE:
            raise ValueError(f"manifest {manifest} or line {line} out of range for the duplicate table")
        meta = line << 20 | manifest << 2
        if len(key) == 36 and _UUID_RE.fullmatch(key):
            return _RECORD.pack(bytes.fromhex(key.replace("-", "")), body, meta | _UUID)
        raw = key.encode()
        if len(raw) <= 15:
            return _RECORD.pack(bytes((len(raw),)) + raw, body, meta | _INLINE)
        padded = raw.ljust(-(-len(raw) // UNIT) * UNIT, b"\0")
        return _RECORD.pack(_LONG.pack(unit + 1, len(raw)), body, meta | _LONG_KEY) + padded

    def _match(self, unit: int, key: str) -> First | None:
        """The record at ``unit`` as a ``First`` if it is ``key``'s, else ``None``."""
        area, body, meta = _RECORD.unpack(self._spill.read(unit))
        tag = meta & 0b11
        if tag == _UUID:
            same = len(key) == 36 and _UUID_RE.fullmatch(key) is not None and area.hex() == key.replace("-", "")
        elif tag == _INLINE:
            same = area[1 : 1 + area[0]] == key.encode()
        else:
            start, length = _LONG.unpack(area)
            same = self._spill.read(start, -(-length // UNIT))[:length] == key.encode()
        return First((meta >> 2) & (MAX_MANIFESTS - 1), meta >> 20, body) if same else None
