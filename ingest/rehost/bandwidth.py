"""``--bwlimit``: one byte budget per second shared by every upload of the run, through aiolimiter.

The bucket holds a quarter of a second of bytes (``AsyncLimiter(rate / 4, 0.25)``), so a run does not start with a
whole second's worth of burst on top of its first second. Chunks are cut to at most a bucket's worth, since
aiolimiter refuses to acquire more than its capacity at once. Sizes take ``K``/``M``/``G`` suffixes (powers of 1024,
as rclone's ``--bwlimit``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncGenerator, AsyncIterator, Iterable

from aiolimiter import AsyncLimiter

BUCKET_S = 0.25
PIECE = 256 * 1024  # largest piece handed to the socket at once (also when unlimited), so pacing stays smooth
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str | float | int) -> int:
    """``"10M"`` -> 10485760; a bare number is bytes; ``ValueError`` for anything else."""
    if isinstance(text, int | float):
        return int(text)
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (expected bytes, or a number with K, M or G)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


class Bandwidth:
    """The run's upload budget in bytes a second (``None``: unlimited)."""

    def __init__(self, bytes_per_s: float | None) -> None:
        self.rate = bytes_per_s
        capacity = None if bytes_per_s is None else max(1.0, bytes_per_s * BUCKET_S)
        self._limiter = None if capacity is None else AsyncLimiter(capacity, BUCKET_S)  # None: no limit
        self._piece = PIECE if capacity is None else max(1, min(PIECE, int(capacity)))  # bytes per acquire
        self.sent = 0  # bytes handed to the network so far, every attempt included

    async def paced(self, chunks: AsyncIterator[bytes] | Iterable[bytes | bytearray]) -> AsyncIterator[memoryview]:
        """``chunks`` cut into pieces, each let through once the budget allows it."""
        if isinstance(chunks, AsyncGenerator):
            # Closed explicitly: a consumer that stops at Content-Length never exhausts it, and the source's file
            # would otherwise stay open until garbage collection.
            async with contextlib.aclosing(chunks) as source:
                async for chunk in source:
                    async for piece in self._pieces(chunk):
                        yield piece
        elif isinstance(chunks, AsyncIterator):
            async for chunk in chunks:
                async for piece in self._pieces(chunk):
                    yield piece
        else:
            for block in chunks:
                async for piece in self._pieces(block):
                    yield piece

    async def _pieces(self, chunk: bytes | bytearray) -> AsyncIterator[memoryview]:
        view = memoryview(chunk)
        for start in range(0, len(view), self._piece):
            piece = view[start : start + self._piece]
            if self._limiter is not None:
                await self._limiter.acquire(len(piece))
            self.sent += len(piece)
            yield piece  # a view, not a copy: aiohttp writes memoryviews as they are

    def __repr__(self) -> str:
        return f"Bandwidth(rate={self.rate}, sent={self.sent})"
