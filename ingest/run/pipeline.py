"""The run, wired in one place (``run_pipeline``):

```
manifests ─► producer ─► items stream (bounded) ─► N consumers ─► results stream ─► sink ─► results.jsonl
              parse, key,                           limiter, upload,                 single writer
              dedupe, resume                         retry policy
```

- The producer reads manifests in a worker thread in batches, derives each item's key, records invalid rows,
  duplicates and changed rows straight to the results stream, skips what an earlier run settled, and queues the
  rest. The items stream holds at most ``2 × concurrency`` items: memory does not grow with the manifest.
- Consumers share one client (one ``aiohttp`` session) and one ``RateLimiter``; every attempt passes the limiter.
- The sink is the only writer of the results file (``ingest.results.sink``).
- ``RunControl`` is how the run stops early: ``stop()`` (first signal) stops reading and lets in-flight requests
  finish within the grace period; ``cancel()`` (second signal, grace expired) abandons them; ``abort(error)``
  (credentials rejected, failure threshold) abandons them and ends with exit 3. Items not finished stay pending:
  they have no record, so the next run sends them again, with the same key.
"""

from __future__ import annotations

import random
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ingest.admission.admit import Admission, WorkItem
from ingest.admission.keys import KeyDeriver
from ingest.admission.shard import Shard
from ingest.credentials import ApiKey
from ingest.errors import (
    EXIT_ABORTED,
    EXIT_INTERRUPTED,
    EXIT_ITEMS_FAILED,
    EXIT_OK,
    AuthRejected,
    IngestError,
    RunAborted,
)
from ingest.keytable import KeyTable
from ingest.manifest.source import ManifestOptions, ManifestRow, ManifestSource, count_rows, read_manifest
from ingest.results.index import ResumeIndex, Verdict, load_index, repair
from ingest.results.lock import ResultsLock
from ingest.results.record import Result, Status, error_dict
from ingest.results.sink import ResultsSink
from ingest.run.metrics import Metrics
from ingest.run.progress import log_progress, show_progress
from ingest.run.stats import RunStats
from ingest.settings import default
from ingest.upload.client import AssetsClient, AttemptResult, ClientOptions, open_session
from ingest.upload.limiter import RateLimiter
from ingest.upload.retry import Outcome, RetryPolicy, classify, decide

log = structlog.get_logger("ingest.run.pipeline")

T = TypeVar("T")

READ_BATCH = 512  # manifest rows parsed per trip to the reader thread


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Everything one run needs, resolved from settings by the CLI (or built directly by tests)."""

    sources: list[ManifestSource]
    results_path: Path
    client: ClientOptions
    rate: float
    burst: float | None = None
    manifest_options: ManifestOptions = field(default_factory=ManifestOptions)
    keys: KeyDeriver = field(default_factory=KeyDeriver)
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    retry_failed: bool = default("retry_failed")
    grace_period: float = default("grace_period")
    fsync_interval: float = default("fsync_interval")
    max_failures: int | None = None
    failure_ratio: float = default("failure_ratio")
    failure_min_items: int = default("failure_min_items")
    require_fal_host: bool = default("require_fal_host")
    progress_interval: float = default("progress_interval")
    handle_signals: bool = False
    limit: int | None = None  # stop queuing after this many items (trying a run on a slice)
    seed: int | None = None  # for the backoff jitter; None: from the OS
    shard: Shard | None = None  # this process's part of the key space (--shard K/N)
    max_duration: float | None = None  # stop taking new items after this many seconds, then drain
    progress: str = "log"  # "bar" (a live display on a terminal), "log" (run.progress events) or "off"
    metrics_port: int | None = None  # serve Prometheus metrics on this port while running
    metrics_host: str = default("metrics_host")
    metrics_textfile: Path | None = None  # write metrics here (node-exporter textfile collector), atomically


@dataclass(slots=True)
class RunReport:
    """How the run ended: its counters, and why it stopped if it stopped early."""

    stats: RunStats
    results_path: Path
    aborted: IngestError | None = None
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        """``DESIGN.md`` § Exit codes."""
        if self.aborted is not None:
            return EXIT_ABORTED
        if self.interrupted:
            return EXIT_INTERRUPTED
        # Items that failed permanently in an earlier run and were skipped are still not in the library:
        # a nightly rerun of the same manifest keeps saying so (exit 1) until they are fixed or retried.
        stats = self.stats
        if stats.by_status.get("failed", 0) or stats.by_status.get("invalid", 0) or stats.skipped_failed:
            return EXIT_ITEMS_FAILED
        return EXIT_OK


class RunControl:
    """The run's brakes; see the module docstring."""

    def __init__(self) -> None:
        self.producer_scope = anyio.CancelScope()  # cancelled to stop reading the manifests
        self.workers_scope = anyio.CancelScope()  # cancelled to abandon in-flight work
        self.stopping = False  # no new attempts may start
        self.interrupted = False  # a signal stopped the run
        self.aborted: IngestError | None = None  # why the run was aborted, if it was

    def __repr__(self) -> str:
        return f"RunControl(stopping={self.stopping}, interrupted={self.interrupted}, aborted={self.aborted!r})"

    def stop(self) -> None:
        """Stop reading and starting attempts; in-flight requests may finish."""
        self.stopping = True
        self.producer_scope.cancel()

    def cancel(self) -> None:
        """Abandon everything in flight now."""
        self.stop()
        self.workers_scope.cancel()

    def abort(self, error: IngestError) -> None:
        """Stop at once because of ``error`` (the first reason wins)."""
        if self.aborted is None:
            self.aborted = error
        self.cancel()


async def run_pipeline(config: RunConfig, api_key: ApiKey) -> RunReport:
    """Run the whole job once; holds the results file's lock throughout."""
    with ResultsLock(config.results_path):
        index = _load_resume(config.results_path)
        return await _Run(config, api_key, index).execute()


def _load_resume(path: Path) -> ResumeIndex:
    index = load_index(path)
    if index.torn_tail:
        repair(path, index)
        log.warning("resume.repaired", results=str(path), truncated_at=index.repair_offset)
    if index.unreadable_count:
        log.warning(
            "resume.unreadable_lines", results=str(path), count=index.unreadable_count, lines=index.unreadable_lines
        )
    if index.lines_read:
        log.info("resume.loaded", results=str(path), records=index.lines_read, keys=len(index))
    return index


class _Run:
    """One execution of ``run_pipeline``: the tasks and the state they share."""

    def __init__(self, config: RunConfig, api_key: ApiKey, index: ResumeIndex) -> None:
        self.config = config
        self.api_key = api_key
        self.index = index  # what earlier runs settled
        self.stats = RunStats(run_id=uuid.uuid4().hex[:12])
        self.control = RunControl()
        self.limiter = RateLimiter(config.rate, burst=config.burst)
        self.rng = random.Random(config.seed)  # backoff jitter
        self.admission = Admission(
            keys=config.keys,
            index=index,
            retry_failed=config.retry_failed,
            require_fal_host=config.require_fal_host,
            run_id=self.stats.run_id,
            shard=config.shard,
        )
        self.client: AssetsClient | None = None
        # Bound once per run: the lazy module logger re-binds on every call, ~4 us each on a per-item path.
        self._item_log = log.bind()

    def __repr__(self) -> str:
        return f"_Run(stats={self.stats!r}, limiter={self.limiter!r}, control={self.control!r})"

    async def execute(self) -> RunReport:
        structlog.contextvars.bind_contextvars(run_id=self.stats.run_id)
        try:
            log.info(
                "run.started",
                manifests=[source.name for source in self.config.sources],
                results=str(self.config.results_path),
                rate=self.config.rate,
                concurrency=self.config.client.concurrency,
                base_url=self.config.client.base_url,
            )
            await self._execute()
            report = RunReport(self.stats, self.config.results_path, self.control.aborted, self.control.interrupted)
            self._log_summary(report)
            return report
        finally:
            structlog.contextvars.unbind_contextvars("run_id")

    async def _execute(self) -> None:
        metrics = self._start_metrics()
        try:
            async with open_session(self.config.client) as session:
                self.client = AssetsClient(session, self.api_key, self.config.client)
                await self._supervise(metrics)
        finally:
            if metrics is not None:
                metrics.close()

    def _start_metrics(self) -> Metrics | None:
        config = self.config
        if config.metrics_port is None and config.metrics_textfile is None:
            return None
        metrics = Metrics(self.stats, self.limiter, textfile=config.metrics_textfile)
        if config.metrics_port is not None:
            port = metrics.serve(config.metrics_port, config.metrics_host)
            log.info("metrics.serving", url=f"http://{config.metrics_host}:{port}/metrics")
        return metrics

    async def _supervise(self, metrics: Metrics | None) -> None:
        """The core stages, plus the helpers that watch them (signals, progress, metrics, the total, deadlines)."""
        concurrency = self.config.client.concurrency
        items_send, items_recv = anyio.create_memory_object_stream[WorkItem](2 * concurrency)
        results_send, results_recv = anyio.create_memory_object_stream[Result](4 * concurrency)
        sink = ResultsSink(
            self.config.results_path, fsync_interval=self.config.fsync_interval, on_result=self._on_result
        )
        async with anyio.create_task_group() as aux:
            if self.config.handle_signals:
                aux.start_soon(self._watch_signals)
            if metrics is not None and metrics.textfile is not None:
                aux.start_soon(self._export_metrics, metrics)
            aux.start_soon(self._report_progress)
            await self._count_total()
            if self.config.max_duration is not None:
                aux.start_soon(self._stop_after, self.config.max_duration)
            async with anyio.create_task_group() as core:
                core.start_soon(sink.run, results_recv)
                async with results_send:
                    await self._run_workers(items_send, items_recv, results_send)
            aux.cancel_scope.cancel()

    async def _run_workers(
        self,
        items_send: MemoryObjectSendStream[WorkItem],
        items_recv: MemoryObjectReceiveStream[WorkItem],
        results_send: MemoryObjectSendStream[Result],
    ) -> None:
        with self.control.workers_scope:
            async with anyio.create_task_group() as workers:
                workers.start_soon(self._produce, items_send, results_send.clone())
                async with items_recv:
                    for _ in range(self.config.client.concurrency):
                        workers.start_soon(self._consume, items_recv.clone(), results_send.clone())

    # -- producer -------------------------------------------------------------------------------------------

    async def _produce(self, items: MemoryObjectSendStream[WorkItem], results: MemoryObjectSendStream[Result]) -> None:
        async with items, results:
            with self.control.producer_scope:
                try:
                    for source in self.config.sources:
                        async for batch in self._read_batches(source):
                            for row in batch:
                                if not await self._admit(row, items, results):
                                    return
                except anyio.BrokenResourceError:
                    return  # every consumer stopped: nothing more to hand out

    async def _read_batches(self, source: ManifestSource) -> AsyncIterator[list[ManifestRow]]:
        """Rows in batches. Files are read on the event loop (page-cache reads are fast, and a reader thread would
        hold the GIL in 5 ms slices while the loop waits); stdin, whose reads can block, in a worker thread."""
        rows = read_manifest(source, self.config.manifest_options, warn=_warn)
        if source.is_stdin:
            while batch := await anyio.to_thread.run_sync(_take, rows, READ_BATCH, abandon_on_cancel=True):
                yield batch
            return
        while batch := _take(rows, READ_BATCH // 8):
            yield batch
            await anyio.lowlevel.checkpoint()

    async def _admit(
        self, row: ManifestRow, items: MemoryObjectSendStream[WorkItem], results: MemoryObjectSendStream[Result]
    ) -> bool:
        """Route one row; returns False when the producer should stop (``--limit`` reached)."""
        self.stats.rows += 1
        decision = self.admission.admit(row)
        if isinstance(decision, Result):
            await _send(results, decision)
        elif decision is Verdict.SKIP_DONE:
            self.stats.skipped_done += 1
        elif decision is Verdict.SKIP_FAILED:
            self.stats.skipped_failed += 1
        elif decision is Verdict.OTHER_SHARD:
            self.stats.rows -= 1  # another shard's row: not part of this run
        elif isinstance(decision, WorkItem):
            if self.config.limit is not None and self.stats.queued >= self.config.limit:
                log.info("run.limit_reached", limit=self.config.limit)
                return False
            self.stats.queued += 1
            await _send(items, decision)
        return True

    # -- consumers ------------------------------------------------------------------------------------------

    async def _consume(
        self, items: MemoryObjectReceiveStream[WorkItem], results: MemoryObjectSendStream[Result]
    ) -> None:
        async with items, results:
            while (item := await _receive(items)) is not None:
                if self.control.stopping:
                    return
                result = await self._upload(item)
                if result is not None:
                    await _send(results, result)

    async def _upload(self, item: WorkItem) -> Result | None:
        """Attempt ``item`` until it succeeds or the policy gives up; ``None`` leaves it pending."""
        assert self.client is not None
        policy, started, attempt, conflicts = self.config.policy, time.monotonic(), 0, 0
        while True:
            await self.limiter.acquire()
            if self.control.stopping:
                return None
            attempt += 1
            self.stats.in_flight += 1
            sent = time.monotonic()
            try:
                answer = await self.client.upload(item.body_bytes, item.key)
            finally:
                self.stats.in_flight -= 1
            self.stats.count_attempt(answer.status, retry=attempt > 1, seconds=time.monotonic() - sent)
            outcome = classify(answer.status)
            elapsed = time.monotonic() - started
            if outcome is Outcome.SUCCESS:
                return self._succeeded(item, answer, attempt, elapsed)
            if outcome is Outcome.AUTH:
                self._auth_rejected(item, answer)
                return None
            run_wide = outcome is Outcome.THROTTLED or (answer.server_wait is not None and answer.status == 503)
            hint = answer.server_wait
            if run_wide and hint is None:
                hint = policy.backoff(attempt, self.rng)
            conflicts += outcome is Outcome.CONFLICT
            decision = decide(
                outcome,
                attempt=attempt,
                elapsed=elapsed,
                server_wait=hint,
                policy=policy,
                rng=self.rng,
                conflicts=conflicts,
            )
            if run_wide:
                self.limiter.pause(decision.delay if decision.retry else hint or 0.0)
                log.info(
                    "limiter.paused",
                    seconds=round(hint or 0.0, 3),
                    status=answer.status,
                    effective_rate=round(self.limiter.effective_rate, 2),
                )
            if not decision.retry:
                return self._failed(item, answer, outcome, attempt, elapsed, decision.reason)
            log.info(
                "upload.retry",
                manifest=item.manifest,
                line=item.line,
                key=item.key,
                attempt=attempt,
                status=answer.status,
                error=answer.error.type if answer.error else None,
                delay=round(decision.delay, 3),
            )
            if not run_wide:
                await anyio.sleep(decision.delay)
            if self.control.stopping:
                return None

    def _succeeded(self, item: WorkItem, answer: AttemptResult, attempt: int, elapsed: float) -> Result:
        self._item_log.debug(
            "upload.succeeded",
            manifest=item.manifest,
            line=item.line,
            key=item.key,
            attempt=attempt,
            elapsed_ms=int(elapsed * 1000),
        )
        return self._record(item, Status.SUCCEEDED, answer, attempt, elapsed, asset=answer.asset)

    def _failed(
        self, item: WorkItem, answer: AttemptResult, outcome: Outcome, attempt: int, elapsed: float, reason: str
    ) -> Result:
        info = answer.error
        retryable = outcome is not Outcome.PERMANENT
        message = info.message if info else f"HTTP {answer.status}"
        if reason in ("attempts_exhausted", "retry_time_exhausted"):
            message = f"{message} (gave up: {reason.replace('_', ' ')} after {attempt} attempts)"
        log.warning(
            "upload.failed",
            manifest=item.manifest,
            line=item.line,
            key=item.key,
            status=answer.status,
            error=info.type if info else None,
            message=message,
            attempts=attempt,
            retryable=retryable,
        )
        error = error_dict(
            info.type if info else "http_error",
            message,
            retryable=retryable,
            request_id=info.request_id if info else None,
        )
        return self._record(item, Status.FAILED, answer, attempt, elapsed, error=error)

    def _record(
        self,
        item: WorkItem,
        status: Status,
        answer: AttemptResult,
        attempt: int,
        elapsed: float,
        *,
        asset: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> Result:
        """The final record of an item that was sent."""
        return Result(
            item.key,
            item.manifest,
            item.line,
            status,
            item.body,
            body_sha256=item.body_sha256,
            attempts=attempt,
            http_status=answer.status,
            asset=asset,
            error=error,
            elapsed_ms=int(elapsed * 1000),
            run_id=self.stats.run_id,
        )

    def _auth_rejected(self, item: WorkItem, answer: AttemptResult) -> None:
        info = answer.error
        if self.control.aborted is None:
            log.error(
                "auth.rejected",
                status=answer.status,
                message=info.message if info else None,
                request_id=answer.request_id,
                manifest=item.manifest,
                line=item.line,
                hint="check FAL_KEY; unfinished items stay pending for the next run",
            )
        self.control.abort(
            AuthRejected(
                answer.status or 0,
                info.type if info else "authorization_error",
                info.message if info else "credentials rejected",
                answer.request_id,
            )
        )

    # -- accounting, progress, signals ----------------------------------------------------------------------

    def _on_result(self, result: Result) -> None:
        self.stats.count(result.status, result.error.get("type") if result.error else None)
        if result.status is Status.FAILED:
            self._check_failure_threshold()

    def _check_failure_threshold(self) -> None:
        failed = self.stats.by_status.get("failed", 0)
        finished = self.stats.by_status.get("failed", 0) + self.stats.by_status.get("succeeded", 0)
        config = self.config
        if config.max_failures is not None and failed >= config.max_failures:
            reason = f"{failed} items failed (max_failures = {config.max_failures})"
        elif finished >= config.failure_min_items and failed / finished > config.failure_ratio:
            reason = (
                f"{failed} of {finished} finished items failed, more than "
                f"{config.failure_ratio:.0%} (failure_ratio after failure_min_items = {config.failure_min_items})"
            )
        else:
            return
        if self.control.aborted is None:
            log.error("run.aborted", reason=reason)
        self.control.abort(RunAborted(f"failure threshold crossed: {reason}"))

    async def _count_total(self) -> None:
        """Pre-count the manifest files (a newline count, ~1 GB/s): the progress total, and the size of the
        duplicate table, made once instead of grown (growing leaves up to a third of it empty)."""
        counts = []
        for source in self.config.sources:
            count = await anyio.to_thread.run_sync(count_rows, source, abandon_on_cancel=True)
            if count is None:
                return
            counts.append(count)
        self.stats.total = sum(counts)
        unsettled = max(0, self.stats.total - len(self.index))
        if self.config.shard is not None:
            unsettled = unsettled // self.config.shard.count * 11 // 10  # a shard's share, with room for skew
        self.admission.seen = KeyTable(value_code="Q", expected=unsettled)

    async def _report_progress(self) -> None:
        if self.config.progress == "bar":
            await show_progress(self.progress)
        elif self.config.progress == "log":
            await log_progress(self.progress, self.config.progress_interval)

    async def _export_metrics(self, metrics: Metrics) -> None:
        while True:
            await anyio.sleep(self.config.progress_interval)
            await anyio.to_thread.run_sync(metrics.write)

    def progress(self) -> dict[str, Any]:
        """Progress figures: the stats' snapshot, the recent rate and ETA, and the limiter's state."""
        rate = self.stats.current_rate()
        eta = self.stats.eta_seconds(rate)
        return {
            **self.stats.snapshot(),
            "rate": round(rate, 1),
            "eta_s": None if eta is None else round(eta),
            "effective_rate": round(self.limiter.effective_rate, 2),
            "paused_s": round(self.limiter.paused_seconds, 2),
        }

    async def _stop_after(self, seconds: float) -> None:
        await anyio.sleep(seconds)
        log.info("run.max_duration_reached", max_duration_s=seconds, in_flight=self.stats.in_flight)
        self.control.stop()
        self.control.workers_scope.deadline = anyio.current_time() + self.config.grace_period

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                if not self.control.stopping:
                    log.warning(
                        "run.signal",
                        signal=signal.Signals(signum).name,
                        action="draining",
                        grace_period_s=self.config.grace_period,
                        in_flight=self.stats.in_flight,
                    )
                    self.control.interrupted = True
                    self.control.stop()
                    self.control.workers_scope.deadline = anyio.current_time() + self.config.grace_period
                else:
                    log.warning(
                        "run.signal",
                        signal=signal.Signals(signum).name,
                        action="cancelling",
                        in_flight=self.stats.in_flight,
                    )
                    self.control.cancel()

    def _log_summary(self, report: RunReport) -> None:
        summary = {
            **self.progress(),
            "exit_code": report.exit_code,
            "errors_by_type": dict(self.stats.errors_by_type),
            "http_statuses": dict(self.stats.by_http_status),
            "results": str(self.config.results_path),
        }
        if report.aborted is not None:
            summary["aborted"] = str(report.aborted)
        if report.interrupted:
            settled = self.stats.by_status.get("succeeded", 0) + self.stats.by_status.get("failed", 0)
            log.warning("run.interrupted", pending=max(0, self.stats.queued - settled))
        log.info("run.summary", **summary)


async def _send(stream: MemoryObjectSendStream[T], value: T) -> None:
    """Hand ``value`` on without a scheduler round trip when there is room (the common case at speed); wait
    for room otherwise. Cancellation is still noticed at the stage's next await (the request itself)."""
    try:
        stream.send_nowait(value)
    except anyio.WouldBlock:
        await stream.send(value)


async def _receive(stream: MemoryObjectReceiveStream[T]) -> T | None:
    """The next value, without a scheduler round trip when one is waiting; ``None`` once the stream is done."""
    try:
        return stream.receive_nowait()
    except anyio.WouldBlock:
        try:
            return await stream.receive()
        except anyio.EndOfStream:
            return None
    except anyio.EndOfStream:
        return None


def _take(rows: Iterator[ManifestRow], count: int) -> list[ManifestRow]:
    batch: list[ManifestRow] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= count:
            break
    return batch


def _warn(event: str, **fields: Any) -> None:
    log.warning(event, **fields)
