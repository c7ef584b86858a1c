"""The only writer of the results file.

It receives ``Result``s from every stage through one memory stream, writes them in batches (one ``write`` and one
``flush`` per batch; a batch gathers records for at most ``BATCH_DELAY``, so a record reaches the OS within 20 ms
of its outcome, and a busy run makes ~50 write calls a second, not one per record), and ``fsync``s at least every
``fsync_interval`` seconds while records arrive, and once more at the end — in a ``finally`` with no await, so a run
that is cancelled still leaves a complete, durable file.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from ingest.errors import LocalIOError
from ingest.results.livefold import LiveFold
from ingest.results.record import Result
from ingest.results.rules import utc_now

MAX_BATCH = 512  # records per write; bounds the bytes buffered between two flushes
BATCH_DELAY = 0.02  # seconds a batch may wait for more records before it is written


class ResultsSink:
    """Appends records to ``path``; ``on_result`` sees each record once it is written."""

    def __init__(
        self,
        path: Path,
        *,
        fsync_interval: float = 1.0,
        on_result: Callable[[Result], None] | None = None,
        on_error: Callable[[LocalIOError], None] | None = None,
        prologue: bytes = b"",
        epilogue: Callable[[], bytes] | None = None,
        fold: LiveFold | None = None,
    ) -> None:
        self.path = path
        self._prologue = prologue  # written first (the run_started record)
        self._epilogue = epilogue  # makes the last line when the stream closes (the run_ended record)
        self.fsync_interval = fsync_interval  # most seconds a written record waits for fsync
        self._on_result = on_result  # stats and failure-threshold hook
        self._on_error = on_error  # told once when the file cannot be written (the run stops)
        self.fold = fold  # folds what is written, for the run's end to save the resume index without reading it
        self.error: LocalIOError | None = None  # the first write failure, if any
        self.written = 0  # records written so far
        self.fsyncs = 0  # fsync calls made
        self._dirty = False  # written but not yet fsynced
        self._last_fsync = time.monotonic()

    def __repr__(self) -> str:
        return f"ResultsSink(path={str(self.path)!r}, written={self.written}, fsyncs={self.fsyncs})"

    async def run(self, receive: MemoryObjectReceiveStream[Result]) -> None:
        """Write everything received until the stream closes; always ends with a flush and fsync.

        A write that fails (disk full, a filesystem turned read-only) is reported once through ``on_error`` (the
        run stops sending); what arrives after it is received and dropped, so no stage blocks on a full stream,
        and those items stay pending. Records written before the failure are intact (each batch is one write).
        """
        async with receive:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                file = self.path.open("ab")
            except OSError as exc:
                self._failed(exc)
                await _discard(receive)
                return
            if self.fold is not None:
                self.fold.opened(file.tell())
            try:
                if self._prologue:
                    file.write(self._prologue)
                    self._folded_lines(self._prologue)
                await self._drain(receive, file)
            except OSError as exc:
                self._failed(exc)
                await _discard(receive)
            finally:
                # Plain synchronous calls: cancellation cannot interrupt them, so no shield is needed.
                try:
                    if self._epilogue is not None and self.error is None:
                        last = self._epilogue()
                        file.write(last)
                        self._folded_lines(last)
                    file.flush()
                    os.fsync(file.fileno())
                    self.fsyncs += 1
                except OSError as exc:
                    self._failed(exc)
                finally:
                    with contextlib.suppress(OSError):
                        file.close()

    def _folded_lines(self, data: bytes) -> None:
        if self.fold is not None:
            self.fold.lines(data)

    def _failed(self, exc: OSError) -> None:
        if self.fold is not None:
            self.fold.drop(f"a write failed: {exc}")
        if self.error is None:
            self.error = LocalIOError(f"cannot write the results file {self.path}: {exc.strerror or exc}")
            if self._on_error is not None:
                self._on_error(self.error)

    async def _drain(self, receive: MemoryObjectReceiveStream[Result], file: BinaryIO) -> None:
        while True:
            first = await self._next(receive, file)
            if first is None:
                return
            batch = [first]
            with anyio.move_on_after(BATCH_DELAY):
                while len(batch) < MAX_BATCH:
                    try:
                        batch.append(receive.receive_nowait())
                    except anyio.WouldBlock:
                        try:
                            batch.append(await receive.receive())
                        except anyio.EndOfStream:
                            break
                    except anyio.EndOfStream:
                        break
            self._write(batch, file)

    async def _next(self, receive: MemoryObjectReceiveStream[Result], file: BinaryIO) -> Result | None:
        """The next record; fsyncs what was written if nothing arrives before the fsync is due."""
        while True:
            if not self._dirty:
                try:
                    return await receive.receive()
                except anyio.EndOfStream:
                    return None
            due = self._last_fsync + self.fsync_interval - time.monotonic()
            with anyio.move_on_after(max(0.0, due)):
                try:
                    return await receive.receive()
                except anyio.EndOfStream:
                    return None
            self._fsync(file)

    def _write(self, batch: list[Result], file: BinaryIO) -> None:
        stamp = utc_now()  # for records not stamped when built (the producer's): one clock reading per batch
        for result in batch:
            result.finished_at = result.finished_at or stamp
        data = b"".join(result.to_line() for result in batch)
        file.write(data)
        file.flush()
        if self.fold is not None:
            self.fold.results(batch, len(data))
        self.written += len(batch)
        self._dirty = True
        if time.monotonic() - self._last_fsync >= self.fsync_interval:
            self._fsync(file)
        if self._on_result is not None:
            for result in batch:
                self._on_result(result)

    def _fsync(self, file: BinaryIO) -> None:
        os.fsync(file.fileno())
        self.fsyncs += 1
        self._dirty = False
        self._last_fsync = time.monotonic()


async def _discard(receive: MemoryObjectReceiveStream[Result]) -> None:
    """Receive and drop everything until the stream closes (after a write failure)."""
    async for _ in receive:
        pass
