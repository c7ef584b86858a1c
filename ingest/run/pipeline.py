"""The run, wired in one place (``run_pipeline``):

```
manifests ─► producer ─► items stream (bounded) ─► N consumers ─► results stream ─► sink ─► results.jsonl
              parse, key,                           limiter, upload,                 single writer
              dedupe, resume                         retry policy
```

- The producer (``ingest.run.producer``) reads manifests in batches, derives each item's key, records invalid rows,
  duplicates and changed rows straight to the results stream, skips what an earlier run settled, and queues the
  rest. The items stream holds at most ``2 × concurrency`` items: memory does not grow with the manifest.
- Consumers (``ingest.upload.consumer``) share one client (one ``aiohttp`` session) and one ``RateLimiter``;
  every attempt passes the limiter.
- The sink is the only writer of the results file (``ingest.results.sink``).
- ``RunControl`` (``ingest.run.control``) is how the run stops early: signals, ``--max-duration``, the failure
  threshold, credentials rejected. Items not finished stay pending: they have no record, so the next run sends them
  again, with the same key.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from ingest.admission.admit import WorkItem
from ingest.credentials import ApiKey
from ingest.errors import IngestError, LocalIOError
from ingest.results.index import ResumeIndex
from ingest.results.livefold import LiveFold
from ingest.results.lock import FamilyMode, ResultsLock
from ingest.results.record import Result, Status
from ingest.results.sink import ResultsSink
from ingest.run.collector import tuned_collector
from ingest.run.config import RunConfig, RunReport
from ingest.run.control import FailureThreshold, RunControl, stop_after, watch_signals
from ingest.run.producer import Producer, count_total
from ingest.run.progress import progress_figures, report_progress
from ingest.run.rehosting import RehostFigures
from ingest.run.resume import check_belonging, live_fold, load_resume, save_resume
from ingest.run.runrecord import RunRecorder, log_summary
from ingest.run.stats import RunStats
from ingest.streams import send
from ingest.upload.limiter import RateLimiter
from ingest.upload.replays import ReplayWatch
from ingest.upload.transport import shown_proxy

if TYPE_CHECKING:  # imported on use (start-up time): the HTTP side once there is an item to send; prometheus_client
    # only by a run that asks for metrics
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from ingest.rehost import Rehoster
    from ingest.run.metrics import Metrics
    from ingest.upload.client import AssetsClient
    from ingest.upload.consumer import Consumer
    from ingest.upload.rehosting import RehostStep

# Consumer tasks per request slot at most: a task is added (up to this) when an item is about to wait out a
# backoff, a Retry-After or its rehost without holding a slot; a clean run keeps one task per slot.
ITEMS_PER_SLOT = 4
# The first requests of the C slots go out spread over the preflight's round trip, at most this many seconds per
# slot: C requests sent at once come back at once, and the last of each burst waits for the client to handle the
# others, round trip after round trip (at C = 256 and 100 ms, 13% of the run). Spread once, they stay spread.
RAMP_PER_SLOT = 0.0005
VERIFY_BATCH = 64  # local files an earlier run ingested, checked at once before the preflight (a stat each)

log = structlog.get_logger("ingest.run")

__all__ = ["RunConfig", "RunReport", "run_pipeline", "start_metrics"]  # the config and report live in run.config


async def run_pipeline(config: RunConfig, api_key: ApiKey) -> RunReport:
    """Run the whole job once; holds the results file's lock throughout."""
    family: FamilyMode = "held" if config.family_lock_held else "shared" if config.shard is not None else "exclusive"
    with ResultsLock(config.results_path, family=family):
        index = load_resume(config.results_path)
        check_belonging(config, index)
        run = _Run(config, api_key, index)
        with tuned_collector():  # the per-item path makes no cycles: collect less often (ingest.run.collector)
            report = await run.execute()
        save_resume(config.results_path, index, run.fold)
        return report


class _Run:
    """One execution of ``run_pipeline``: the stages, wired, and the state they share."""

    def __init__(self, config: RunConfig, api_key: ApiKey, index: ResumeIndex) -> None:
        self.config = config
        self.api_key = api_key
        self.index = index  # what earlier runs settled
        self.stats = RunStats(run_id=uuid.uuid4().hex[:12])
        self.control = RunControl()
        self.limiter = RateLimiter(config.rate, burst=config.burst)
        self.recorder = RunRecorder(
            run_id=self.stats.run_id,
            manifests=[source.path for source in config.sources],
            key_fields=config.keys.key_fields,
            key_namespace=config.keys.key_namespace,
            ca_bundle=config.client.ca_bundle,
        )
        # A fresh results file: its first answers tell whether the items were done by a run recorded elsewhere.
        fresh = index.lines_read == 0
        self.replays = ReplayWatch(
            started_epoch=self.recorder.started_epoch, results=str(config.results_path), active=fresh
        )
        self.threshold = FailureThreshold(config.max_failures, config.failure_ratio, config.failure_min_items)
        self.admission = config.rules.admission(index, run_id=self.stats.run_id)
        self.admission.rehost_mode = config.rehost_mode  # what is rehosted, and which done rows are verified
        self.rehoster: Rehoster | None = None  # the run's rehost stage, once the session is open
        self.rehost_figures = RehostFigures()
        self.refused: IngestError | None = None  # the preflight's answer, when it stopped the run
        self.fold: LiveFold | None = None  # the records this run writes, folded as written (ingest.results.livefold)

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
                proxy=shown_proxy(self.config.client.proxy),
            )
            metrics = start_metrics(self.config, self.stats, self.limiter)
            try:
                await self._supervise(metrics)
            finally:
                if metrics is not None:
                    metrics.close()
            if self.refused is not None:
                raise self.refused  # the preflight's answer (a wrong URL or key): nothing was sent
            report = self.report()
            report.summary = log_summary(report, self.figures())
            return report
        finally:
            structlog.contextvars.unbind_contextvars("run_id")

    async def _supervise(self, metrics: Metrics | None) -> None:
        """The core stages, plus the helpers that watch them (signals, progress, metrics, the total, deadlines)."""
        config = self.config
        async with anyio.create_task_group() as aux:
            if config.handle_signals:
                aux.start_soon(partial(watch_signals, self.control, grace=config.grace_period, stats=self.stats))
            if metrics is not None and metrics.textfile is not None:
                from ingest.run.metrics import export_metrics

                aux.start_soon(export_metrics, metrics, config.progress_interval)
            aux.start_soon(report_progress, config.progress, self.figures, config.progress_interval)
            await count_total(config.sources, self.stats, self.admission, known=len(self.index), shard=config.shard)
            if config.max_duration is not None:
                aux.start_soon(
                    partial(stop_after, self.control, config.max_duration, grace=config.grace_period, stats=self.stats)
                )
            await self._run_core()
            aux.cancel_scope.cancel()

    async def _run_core(self) -> None:
        """producer → items stream (bounded) → N consumers → results stream → sink."""
        config = self.config
        concurrency = config.client.concurrency
        items_send, items_recv = anyio.create_memory_object_stream[WorkItem](2 * concurrency)
        results_send, results_recv = anyio.create_memory_object_stream[Result](4 * concurrency)
        self.fold = live_fold(config.results_path, self.index, total=self.stats.total)
        sink = ResultsSink(
            config.results_path,
            fold=self.fold,
            fsync_interval=config.fsync_interval,
            on_result=self._on_result,
            on_error=self._local_io_failed,
            prologue=self.recorder.started_line(),
            epilogue=self.recorder.epilogue(lambda: (self.report().ending, self.figures())),
        )
        producer = Producer(
            config.sources,
            self.admission,
            options=config.manifest_options,
            stats=self.stats,
            control=self.control,
            limit=config.limit,
            fold=self.fold,
        )
        async with anyio.create_task_group() as core:
            core.start_soon(sink.run, results_recv)
            async with results_send:
                with self.control.workers_scope:
                    async with anyio.create_task_group() as workers:
                        workers.start_soon(producer.run, items_send, results_send.clone())
                        workers.start_soon(self._consume, items_recv, results_send.clone())

    async def _consume(
        self, items: MemoryObjectReceiveStream[WorkItem], results: MemoryObjectSendStream[Result]
    ) -> None:
        """The consumers, once the producer has queued a first item to send: until then the run has opened no
        connection, and a run with nothing left to send (a nightly rerun) never opens one, sends no preflight and
        does not even import the HTTP client."""
        async with items, results:
            try:
                first = await items.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                return
            from ingest.run.rehosting import rehost_stage  # the HTTP side, on first use
            from ingest.upload.client import AssetsClient, open_session
            from ingest.upload.preflight import preflight

            config = self.config
            pool = config.client.concurrency + config.rehost.upload_concurrency  # storage shares the pool
            async with (
                open_session(replace(config.client, concurrency=pool)) as session,
                rehost_stage(config, session, self.api_key, run_id=self.stats.run_id) as rehosting,
            ):
                self.rehoster = rehosting.rehoster if rehosting is not None else None
                if rehosting is not None and first.rehost == "verify":
                    next_item = await self._verify_local(first, items, results, rehosting)
                    if next_item is None:
                        return  # every item was a local file an earlier run ingested: no request was needed
                    first = next_item
                client = AssetsClient(session, self.api_key, config.client)
                async with anyio.create_task_group() as consumers:
                    if self.rehoster is not None and first.rehost == "upload":
                        consumers.start_soon(self.rehoster.client.warm)  # the storage token, beside the preflight
                    round_trip = 0.0  # the preflight's: how far apart the first requests go out
                    if config.preflight:
                        sent = time.monotonic()
                        try:
                            await preflight(client, self.limiter)  # a wrong URL or key stops here: nothing sent
                        except IngestError as refused:
                            self.refused = refused
                            self.control.abort(refused)
                            consumers.cancel_scope.cancel()
                            return
                        round_trip = time.monotonic() - sent
                    tasks = config.client.concurrency

                    def spare() -> None:
                        nonlocal tasks
                        if tasks < config.client.concurrency * ITEMS_PER_SLOT:
                            tasks += 1
                            consumers.start_soon(consumer.run, items.clone(), results.clone())

                    consumer = self._consumer(client, rehosting, spare)
                    step = min(round_trip, tasks * RAMP_PER_SLOT) / tasks
                    for n in range(tasks):  # the first task sends the item that opened the connection first
                        run = partial(consumer.run, start_after=n * step, first=None if n else first)
                        consumers.start_soon(run, items.clone(), results.clone())

    async def _verify_local(
        self,
        first: WorkItem,
        items: MemoryObjectReceiveStream[WorkItem],
        results: MemoryObjectSendStream[Result],
        rehosting: RehostStep,
    ) -> WorkItem | None:
        """Check, before the preflight, that the local files earlier runs ingested are unchanged (``verify``: a
        stat each, up to ``VERIFY_BATCH`` at once), so that a rerun of a local migration with nothing left sends no
        request at all, as a rerun of fal urls does. The first item that needs the network is returned for the
        consumers (``None``: there was none)."""

        def local_verify(item: WorkItem) -> bool:
            return item.rehost == "verify" and rehosting.is_local(item)

        item: WorkItem | None = first
        while item is not None and local_verify(item):
            batch, item, ended = [item], None, False
            while len(batch) < VERIFY_BATCH:
                try:
                    queued = items.receive_nowait()
                except anyio.WouldBlock:
                    break
                except anyio.EndOfStream:
                    ended = True
                    break
                if not local_verify(queued):
                    item = queued
                    break
                batch.append(queued)
            async with anyio.create_task_group() as checks:
                for checked in batch:
                    checks.start_soon(self._verify_one, checked, results, rehosting)
            if ended:
                return None
            if item is None:
                try:
                    item = await items.receive()
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    return None
        return item

    async def _verify_one(self, item: WorkItem, results: MemoryObjectSendStream[Result], rehosting: RehostStep) -> None:
        changed = await rehosting.verify(item)
        if changed is None:
            self.stats.skipped_done += 1
        else:
            await send(results, changed)

    def _consumer(self, client: AssetsClient, rehosting: RehostStep | None, spare: Callable[[], None]) -> Consumer:
        from ingest.upload.consumer import Consumer
        from ingest.upload.health import OUTAGE_PROBE_MAX, ServiceHealth

        config = self.config
        return Consumer(
            client,
            limiter=self.limiter,
            policy=config.policy,
            brakes=self.control,
            health=ServiceHealth(
                client,
                max_outage=config.max_outage,
                probe_max=min(config.policy.backoff_max, OUTAGE_PROBE_MAX),
                stop=self.control.abort,
            ),
            counters=self.stats,
            replays=self.replays,
            run_id=self.stats.run_id,
            rng=random.Random(config.seed),
            slots=config.client.concurrency,
            rehosting=rehosting,
            spare=spare,
        )

    def _local_io_failed(self, error: LocalIOError) -> None:
        log.error("results.write_failed", message=str(error), hint="items not recorded stay pending for the next run")
        self.control.abort(error)

    def report(self) -> RunReport:
        """How the run stands (at its end: how it ended)."""
        control, recorder = self.control, self.recorder
        return RunReport(
            self.stats,
            self.config.results_path,
            control.aborted,
            control.interrupted,
            stop_reason=control.stop_reason,
            started_at=recorder.started_at,
            ended_at=recorder.ended_at,
            duration_s=recorder.duration_s,
        )

    def _on_result(self, result: Result) -> None:
        self.stats.count(result.status, result.error.get("type") if result.error else None)
        if result.status is Status.FAILED:
            self.threshold.check(self.stats, self.control)

    def figures(self) -> dict[str, Any]:
        """Progress figures: the stats' snapshot, the recent rate and ETA, the limiter's state, bytes uploaded."""
        return {**progress_figures(self.stats, self.limiter), **self.rehost_figures(self.rehoster, self.stats)}


def start_metrics(config: RunConfig, stats: RunStats, limiter: RateLimiter) -> Metrics | None:
    """The metrics endpoint and/or textfile, when asked for."""
    if config.metrics_port is None and config.metrics_textfile is None:
        return None
    from ingest.run.metrics import Metrics

    metrics = Metrics(stats, limiter, textfile=config.metrics_textfile)
    if config.metrics_port is not None:
        port = metrics.serve(config.metrics_port, config.metrics_host)
        log.info("metrics.serving", url=f"http://{config.metrics_host}:{port}/metrics")
    return metrics
