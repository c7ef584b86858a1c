"""A compact map from idempotency keys to small integers, for millions of keys in little memory.

Python dicts of strings cost ~300 bytes per key; a run over 10^7 items needs far less. ``KeyTable`` stores a
64-bit fingerprint of each key (BLAKE2b) and an unsigned value in two flat ``array``s, with open addressing and
linear probing (Knuth, TAOCP vol. 3, §6.4, algorithm L). With 4-byte values (type code ``"I"``; ``"L"`` is 8 bytes
on 64-bit Linux) that is 12 bytes per slot; the table grows by 1.5× past 85% load, so it costs 14–21 bytes per key
(sized once from a count: 14).

A fingerprint is not a key: two keys can share one (probability < 3·10⁻⁶ over 10^7 keys). The duplicate table
(``ingest.admission.seen``) confirms every fingerprint it finds again against the key stored in full on disk;
the resume index keeps a body fingerprint in the value, so a resumed item whose body differs is reported, not
skipped.
"""

from __future__ import annotations

import hashlib
from array import array
from typing import BinaryIO

MAX_LOAD = 0.85  # grow beyond this share of occupied slots (linear probing: ~22 probes for a miss when full)
GROWTH = 1.5  # capacity multiplier on growth


def fingerprint(key: str) -> int:
    """The key's non-zero 64-bit fingerprint (0 marks an empty slot)."""
    return fingerprint_bytes(key.encode())


def fingerprint_bytes(key: bytes) -> int:
    """``fingerprint`` of a UTF-8 encoded key (read straight from a results file, no decoding)."""
    value = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
    return value or 1


class KeyTable:
    """Fingerprint → unsigned integer (``value_code`` ``"I"``: 32 bits, ``"Q"``: 64 bits, ``"B"``: 8 bits)."""

    __slots__ = ("_count", "_fps", "_limit", "_value_code", "_values")

    def __init__(self, *, value_code: str = "I", expected: int = 0) -> None:
        capacity = max(1024, int(expected / MAX_LOAD) + 1)
        self._value_code = value_code  # array type code of the values
        # array(code, [0]) * n allocates the zeroed array once; array(code, bytes(n)) held a copy of it as well
        self._fps = array("Q", [0]) * capacity  # fingerprints; 0 = empty slot
        self._values = array(value_code, [0]) * capacity  # value per slot
        self._count = 0  # occupied slots
        self._limit = int(capacity * MAX_LOAD)  # count that triggers growth

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        capacity = len(self._fps)
        return f"KeyTable(keys={self._count}, capacity={capacity}, bytes={self.nbytes})"

    @property
    def value_code(self) -> str:
        """The ``array`` type code of the values."""
        return self._value_code

    @property
    def nbytes(self) -> int:
        """Memory held by the two arrays."""
        return len(self._fps) * self._fps.itemsize + len(self._values) * self._values.itemsize

    def get(self, fp: int) -> int | None:
        """The value stored for fingerprint ``fp``, or ``None``."""
        fps = self._fps
        capacity = len(fps)
        slot = fp % capacity
        while True:
            found = fps[slot]
            if found == fp:
                return self._values[slot]
            if found == 0:
                return None
            slot += 1
            if slot == capacity:
                slot = 0

    def put(self, fp: int, value: int) -> None:
        """Store ``value`` for fingerprint ``fp`` (replacing an earlier one)."""
        if self.put_new(fp, value) is not None:  # there already: a second probe, only to replace its value
            fps, capacity = self._fps, len(self._fps)
            slot = fp % capacity
            while fps[slot] != fp:
                slot = slot + 1 if slot + 1 < capacity else 0
            self._values[slot] = value

    def put_new(self, fp: int, value: int) -> int | None:
        """Store ``value`` for ``fp`` unless ``fp`` is there: then leave it, and return its value (one probe)."""
        fps = self._fps
        capacity = len(fps)
        slot = fp % capacity
        while True:
            found = fps[slot]
            if found == fp:
                return self._values[slot]
            if found == 0:
                fps[slot] = fp
                self._values[slot] = value
                self._count += 1
                if self._count > self._limit:
                    self._grow()
                return None
            slot += 1
            if slot == capacity:
                slot = 0

    def _grow(self) -> None:
        old_fps, old_values = self._fps, self._values
        capacity = int(len(old_fps) * GROWTH) + 1
        self._fps = array("Q", [0]) * capacity
        self._values = array(self._value_code, [0]) * capacity
        self._count = 0
        self._limit = int(capacity * MAX_LOAD)
        for fp, value in zip(old_fps, old_values, strict=True):
            if fp:
                self.put_new(fp, value)

    def arrays(self) -> tuple[array[int], array[int]]:
        """The fingerprint and value arrays (what ``dump`` writes, in that order)."""
        return self._fps, self._values

    def shape(self) -> dict[str, object]:
        """What ``load`` needs to read back what ``dump`` wrote."""
        return {"code": self._value_code, "capacity": len(self._fps), "count": self._count}

    def dump(self, file: BinaryIO) -> None:
        """Write both arrays to ``file`` as raw machine words (native byte order)."""
        self._fps.tofile(file)
        self._values.tofile(file)

    @classmethod
    def load(cls, file: BinaryIO, shape: dict[str, object], *, value_code: str) -> KeyTable:
        """The table ``dump`` wrote with ``shape``, read straight into its arrays (no per-key work); ``ValueError`` if
        it was written with other values than ``value_code``, ``EOFError`` if the file ends early."""
        capacity, count = shape["capacity"], shape["count"]
        if shape["code"] != value_code or not isinstance(capacity, int) or not isinstance(count, int):
            raise ValueError(f"not a table of {value_code!r} values: {shape}")
        if not 0 <= count <= capacity * MAX_LOAD or capacity < 1:
            raise ValueError(f"impossible table shape: {shape}")
        table = cls.__new__(cls)
        table._value_code = value_code
        table._fps, table._values = array("Q"), array(value_code)
        table._fps.fromfile(file, capacity)
        table._values.fromfile(file, capacity)
        table._count = count
        table._limit = int(capacity * MAX_LOAD)
        return table
