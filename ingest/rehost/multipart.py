"""A multipart upload with bounded memory: one sequential reader, a hand-off, part workers, a journal.

```
source ──► reader (hashes every byte in order, cuts PART_SIZE parts) ──► hand-off ──► W part workers ──► storage
              └ takes a part buffer from the run's pool first                           └ each part retried
```

Memory is bounded by the run's pool of part buffers (``PartBuffers``), shared by every file being uploaded: a buffer
is taken before the reader fills it and given back once its part is acknowledged (before the part is journaled), so at
most ``pool × PART_SIZE`` bytes are held, whatever the number or size of files. A part that fails is sent again from
its buffer (the source is not read twice). Each acknowledged part is journaled; a rerun whose journal holds an
unfinished upload of the same source (same fingerprint, younger than ``max_age``) re-reads the source to hash it,
skips the acknowledged parts and completes the same ``uploadId``. If the storage no longer knows it, the upload starts
afresh once.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ingest.rehost.client import StorageClient
from ingest.rehost.journal import PendingMultipart, RehostJournal
from ingest.rehost.options import PART_SIZE
from ingest.rehost.sources import Fingerprint, Source, SourceError
from ingest.rehost.storage import UnknownUpload
from ingest.rehost.tally import Transfer

if TYPE_CHECKING:
    from hashlib import _Hash

log = structlog.get_logger("ingest.rehost.multipart")


class PartBuffers:
    """The run's pool of part buffers: how many parts may be held in memory at once, over all files."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._semaphore = anyio.Semaphore(count)  # one token per buffer

    async def take(self) -> None:
        await self._semaphore.acquire()

    def give_back(self) -> None:
        self._semaphore.release()

    def __repr__(self) -> str:
        return f"PartBuffers(free={self._semaphore.value}/{self.count})"


@dataclass(frozen=True, slots=True)
class MultipartResult:
    """What a finished multipart upload reports."""

    url: str
    sha256: str
    size: int
    parts: int
    resumed_parts: int  # parts acknowledged by an earlier run, not sent again


class MultipartUpload:
    """One file's multipart upload; ``run()`` does it, resuming from the journal when it can."""

    def __init__(
        self,
        client: StorageClient,
        source: Source,
        *,
        key: str,
        fingerprint: Fingerprint,
        content_type: str,
        journal: RehostJournal,
        buffers: PartBuffers,
        workers: int,
        max_age: float,
        transfer: Transfer,
    ) -> None:
        self.client, self.source, self.key = client, source, key
        self.fingerprint, self.content_type = fingerprint, content_type
        self.journal, self.buffers, self.workers, self.max_age = journal, buffers, workers, max_age
        self.transfer = transfer  # the run's progress by bytes, which this upload moves
        self._held = 0  # buffers this upload holds now (given back whatever happens)
        self._error: BaseException | None = None  # the first part worker's failure

    async def run(self) -> MultipartResult:
        pending = self.journal.resumable(self.key, self.fingerprint.as_dict(), max_age=self.max_age)
        stale = self.journal.multipart.get(self.key)
        if pending is None and stale is not None:
            await self.journal.record_dropped(self.key, stale)
        if pending is not None:
            log.info("rehost.multipart_resumed", key=self.key, parts_done=len(pending.etags))
            try:
                return await self._upload(pending)
            except UnknownUpload:
                log.warning("rehost.multipart_unknown", key=self.key, upload_id=pending.upload_id)
                await self.journal.record_dropped(self.key, pending)
        return await self._upload(await self._start())

    async def _start(self) -> PendingMultipart:
        access_url, upload_id = await self.client.start(file_name=self.source.file_name, content_type=self.content_type)
        pending = PendingMultipart(upload_id, access_url, PART_SIZE, self.fingerprint.as_dict(), time.time())
        await self.journal.record_started(self.key, pending)
        return pending

    async def _upload(self, pending: PendingMultipart) -> MultipartResult:
        self._error = None  # a resumed attempt's failure must not outlive it
        send, receive = anyio.create_memory_object_stream[tuple[int, bytearray]](0)
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(self.workers):
                    tg.start_soon(self._work, receive.clone(), pending, tg.cancel_scope)
                receive.close()
                async with send:
                    sha256, size, count, resumed = await self._feed(send, pending)
        finally:
            while self._held:
                self._give_back()
        if self._error is not None:
            raise self._error
        if self.fingerprint.size is not None and size != self.fingerprint.size:
            raise SourceError(f"{self.source.location} changed while being read", retryable=True)
        url = await self.client.complete(pending.access_url, pending.upload_id, dict(pending.etags))
        return MultipartResult(url, sha256, size, count, resumed)

    async def _feed(
        self, send: MemoryObjectSendStream[tuple[int, bytearray]], pending: PendingMultipart
    ) -> tuple[str, int, int, int]:
        """Hand every part not yet acknowledged to the workers: (sha256, size, parts, parts skipped)."""
        sha, size, count, resumed = hashlib.sha256(), 0, 0, 0
        async with contextlib.aclosing(self._parts(pending.part_size, sha)) as parts:
            async for number, data in parts:
                size, count = size + len(data), number
                if number in pending.etags:
                    resumed += 1
                    self.transfer.done(len(data))
                    self._give_back()
                    continue
                await send.send((number, data))
        return sha.hexdigest(), size, count, resumed

    async def _parts(self, part_size: int, sha: _Hash) -> AsyncGenerator[tuple[int, bytearray]]:
        """The source cut into numbered parts, each in its own buffer taken from the pool; every byte hashed into
        ``sha`` in order, as the source reads it (off the event loop for a local file)."""
        number, buffer, filled = 0, bytearray(), 0
        async with contextlib.aclosing(self.source.read(digest=sha)) as chunks:
            async for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    if not buffer:
                        await self._take()
                        buffer, filled = bytearray(part_size), 0
                    take = min(len(view), part_size - filled)
                    buffer[filled : filled + take] = view[:take]
                    filled, view = filled + take, view[take:]
                    if filled == part_size:
                        number += 1
                        yield number, buffer
                        buffer = bytearray()
        if buffer or number == 0:
            if not buffer:
                await self._take()
            del buffer[filled:]
            yield number + 1, buffer

    async def _work(
        self,
        parts: MemoryObjectReceiveStream[tuple[int, bytearray]],
        pending: PendingMultipart,
        scope: anyio.CancelScope,
    ) -> None:
        async with parts:
            async for number, data in parts:
                size = len(data)
                try:
                    try:
                        etag = await self.client.put_part(
                            pending.access_url, pending.upload_id, number, data, self.content_type
                        )
                    finally:  # acknowledged or failed, the bytes are done with: the reader refills while we journal
                        del data
                        self._give_back()
                    await self.journal.record_part(self.key, pending, number, etag)
                    self.transfer.sent(size)
                except Exception as exc:  # the first failure ends the upload; the caller sees it
                    if self._error is None:
                        self._error = exc
                    scope.cancel()
                    return

    async def _take(self) -> None:
        await self.buffers.take()
        self._held += 1

    def _give_back(self) -> None:
        self._held -= 1
        self.buffers.give_back()

    def __repr__(self) -> str:
        return f"MultipartUpload(key={self.key!r}, held={self._held}, {self.buffers!r})"
