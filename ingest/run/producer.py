"""The producer: streams manifest rows, routes each through ``Admission``, and queues what is to be sent.

Invalid rows, duplicates and changed rows go straight to the results stream; what an earlier run settled is
skipped and counted; the rest is queued as ``WorkItem``s. The items stream is bounded, so memory does not grow
with the manifest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import structlog
from anyio.streams.memory import MemoryObjectSendStream

from ingest.admission.admit import Admission, WorkItem
from ingest.admission.keys import row_salt
from ingest.admission.seen import SeenKeys
from ingest.admission.shard import Shard
from ingest.manifest.skip import LineSkip
from ingest.manifest.source import ManifestOptions, ManifestRow, ManifestSource, count_rows, read_manifest
from ingest.results.index import Verdict
from ingest.results.livefold import LiveFold
from ingest.results.record import Result
from ingest.run.control import RunControl
from ingest.run.stats import RunStats
from ingest.streams import send

log = structlog.get_logger("ingest.run")

READ_BATCH = 512  # manifest rows parsed per trip to the reader thread


class Producer:
    """Reads ``sources`` in order and hands every row to admission; stops at ``limit`` queued items."""

    def __init__(
        self,
        sources: list[ManifestSource],
        admission: Admission,
        *,
        options: ManifestOptions,
        stats: RunStats,
        control: RunControl,
        limit: int | None = None,
        fold: LiveFold | None = None,
    ) -> None:
        self.sources = sources
        self.admission = admission
        self.options = options
        self.stats = stats  # rows, queued and skipped are counted here
        self.control = control  # its producer scope is cancelled to stop reading
        self.limit = limit  # --limit: queue at most this many items
        self.fold = fold  # told of the manifest blocks read whose rows all have line fingerprints

    def __repr__(self) -> str:
        return f"Producer(sources={[s.name for s in self.sources]}, queued={self.stats.queued}, limit={self.limit})"

    async def run(self, items: MemoryObjectSendStream[WorkItem], results: MemoryObjectSendStream[Result]) -> None:
        """Produce until the manifests end, ``limit`` is reached, or the run stops."""
        async with items, results:
            with self.control.producer_scope:
                try:
                    for source in self.sources:
                        async for batch in self._read_batches(source):
                            for row in batch:
                                if not await self._admit(row, items, results):
                                    return
                except anyio.BrokenResourceError:
                    return  # every consumer stopped: nothing more to hand out

    async def _read_batches(self, source: ManifestSource) -> AsyncIterator[list[ManifestRow]]:
        """Rows in batches. Files are read on the event loop (page-cache reads are fast, and a reader thread would
        hold the GIL in 5 ms slices while the loop waits); stdin and remote manifests, whose reads can block, in a
        worker thread.
        Lines an earlier run finished are dropped unread (``LineSkip``) and counted as skipped."""
        skip = self._line_skip(source)
        rows = read_manifest(source, self.options, warn=_warn, skip=skip)
        take, size = (_take, READ_BATCH // 8) if not source.reads_block else (None, READ_BATCH)
        while True:
            if take is None:
                batch = await anyio.to_thread.run_sync(_take, rows, size, abandon_on_cancel=True)
            else:
                batch = take(rows, size)
                await anyio.lowlevel.checkpoint()
            if skip is not None and (skipped := skip.take_skipped()):
                self.stats.rows += skipped
                self.stats.skipped_done += skipped
            if not batch:
                return
            yield batch

    def _line_skip(self, source: ManifestSource) -> LineSkip | None:
        admission = self.admission
        if admission.shard is not None:
            return None  # another shard's rows must not be counted as this one's
        salt = row_salt(self.options, admission.keys, require_fal_host=admission.require_fal_host)
        index = admission.index
        record = self.fold.block if self.fold is not None else None
        skip = LineSkip(salt, index.has_row if index.rows is not None else None, index.blocks, record)
        admission.row_fps = skip.fps
        return skip

    async def _admit(
        self, row: ManifestRow, items: MemoryObjectSendStream[WorkItem], results: MemoryObjectSendStream[Result]
    ) -> bool:
        """Route one row; returns False when the producer should stop (``--limit`` reached)."""
        self.stats.rows += 1
        decision = self.admission.admit(row)
        if isinstance(decision, Result):
            await send(results, decision)
        elif decision is Verdict.SKIP_DONE:
            self.stats.skipped_done += 1
        elif decision is Verdict.SKIP_FAILED:
            self.stats.skipped_failed += 1
        elif decision is Verdict.OTHER_SHARD:
            self.stats.rows -= 1  # another shard's row: not part of this run
        elif isinstance(decision, WorkItem) and decision.rehost == "verify":
            await send(items, decision)  # already ingested: a consumer checks its source is unchanged
        elif isinstance(decision, WorkItem):
            if self.limit is not None and self.stats.queued >= self.limit:
                log.info("run.limit_reached", limit=self.limit)
                return False
            self.stats.queued += 1
            self.stats.to_rehost += decision.rehost == "upload"
            await send(items, decision)
        return True


async def count_total(
    sources: list[ManifestSource], stats: RunStats, admission: Admission, *, known: int, shard: Shard | None
) -> None:
    """Pre-count the manifest files (a newline count, ~1 GB/s): the progress total, and the size of the
    duplicate table, made once instead of grown (growing leaves up to a third of it empty)."""
    counts = []
    for source in sources:
        count = await anyio.to_thread.run_sync(count_rows, source, abandon_on_cancel=True)
        if count is None:
            return
        counts.append(count)
    stats.total = sum(counts)
    unsettled = max(0, stats.total - known)
    if shard is not None:
        unsettled = unsettled // shard.count * 11 // 10  # a shard's share, with room for skew
    admission.seen = SeenKeys(expected=unsettled)


def _take(rows: Iterator[ManifestRow], count: int) -> list[ManifestRow]:
    batch: list[ManifestRow] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= count:
            break
    return batch


def _warn(event: str, **fields: Any) -> None:
    (log.info if event == "manifest.detected" else log.warning)(event, **fields)
