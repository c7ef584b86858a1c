"""Hand-offs between the pipeline's stages over anyio memory object streams, without a scheduler round trip when
they need none (the common case at speed)."""

from __future__ import annotations

from typing import TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

T = TypeVar("T")


async def send(stream: MemoryObjectSendStream[T], value: T) -> None:
    """Hand ``value`` on at once when there is room; wait for room otherwise. Cancellation is still noticed at the
    stage's next await (the request itself)."""
    try:
        stream.send_nowait(value)
    except anyio.WouldBlock:
        await stream.send(value)


async def receive(stream: MemoryObjectReceiveStream[T]) -> T | None:
    """The next value, at once when one is waiting; ``None`` once the stream is done."""
    try:
        return stream.receive_nowait()
    except anyio.WouldBlock:
        try:
            return await stream.receive()
        except anyio.EndOfStream:
            return None
    except anyio.EndOfStream:
        return None
