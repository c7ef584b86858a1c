"""A consumer: takes work items off the stream and attempts each until it succeeds or the retry policy gives up.

Every attempt passes the shared ``RateLimiter``; the decision after an attempt is the policy's (``decide``), and
the consumer only acts on it: sleep and retry, or record the final outcome. A throttle answer (``Decision.pause_all``)
is reported to the limiter, which pauses the whole run only when the pattern of answers says the account is limited;
otherwise the item alone waits out its ``Retry-After``. An item the run stops for (a signal, an abort) returns
``None``: it has no record and stays pending, so the next run sends it again with the same key. A failure that is
the service's, not the item's (the endpoint gone, the server unreachable), is ``ServiceHealth``'s to judge: the item
waits for the service and is not charged for it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ingest.admission.admit import WorkItem
from ingest.errors import AuthRejected, IngestError
from ingest.results.record import Result
from ingest.streams import receive, send
from ingest.upload.client import AssetsClient, AttemptResult
from ingest.upload.health import Health, ServiceHealth
from ingest.upload.limiter import RateLimiter
from ingest.upload.outcomes import SentRecords
from ingest.upload.rehosting import RehostStep
from ingest.upload.replays import ReplayWatch
from ingest.upload.retry import Outcome, RetryPolicy, classify, decide

log = structlog.get_logger("ingest.upload")


class Brakes(Protocol):
    """What a consumer needs of the run's control: whether to stop, and how to abort the run."""

    @property
    def stopping(self) -> bool: ...

    @property
    def aborted(self) -> IngestError | None: ...

    def abort(self, error: IngestError) -> None: ...


class AttemptCounters(Protocol):
    """What a consumer counts: requests in flight, and each attempt's status and latency."""

    in_flight: int
    skipped_done: int

    def count_attempt(self, status: int | None, *, retry: bool, seconds: float) -> None: ...


class Consumer:
    """The attempt loop, shared by the run's N consumer tasks (it holds no per-item state)."""

    def __init__(
        self,
        client: AssetsClient,
        *,
        limiter: RateLimiter,
        policy: RetryPolicy,
        brakes: Brakes,
        health: ServiceHealth,
        counters: AttemptCounters,
        replays: ReplayWatch | None = None,
        run_id: str,
        rng: random.Random,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        slots: int = 1 << 30,
        rehosting: RehostStep | None = None,
        spare: Callable[[], None] = lambda: None,
    ) -> None:
        self.client = client
        self.rehosting = rehosting  # uploads media that is not on fal first (None: --rehost never)
        self.limiter = limiter  # every attempt passes it, retries too
        self.policy = policy
        self.brakes = brakes
        self.health = health  # tells the service's failures from the item's
        self.counters = counters
        self.replays = replays  # looks at the first successes of a run on a fresh results file
        self.run_id = run_id  # stamped on every record
        self.records = SentRecords(run_id)  # the final record of an item that was sent
        self.rng = rng  # backoff jitter
        self._sleep = sleep  # the backoff's wait (a fake clock's sleep in tests)
        # Requests in flight at once, over all tasks sharing this consumer. The run starts one task per slot; an
        # item about to wait without its slot (a backoff, a Retry-After, the service's outage, its own rehost) asks
        # for a spare task first (``spare``, capped by the run), so that the slot it gives back is used meanwhile.
        # A clean run so keeps one task per slot, and a slot is never contended.
        self._slots = asyncio.Semaphore(slots)
        self._spare = spare

    def __repr__(self) -> str:
        return f"Consumer(run_id={self.run_id!r}, limiter={self.limiter!r})"

    async def run(
        self,
        items: MemoryObjectReceiveStream[WorkItem],
        results: MemoryObjectSendStream[Result],
        *,
        start_after: float = 0.0,
        first: WorkItem | None = None,
    ) -> None:
        """Consume until the items stream ends or the run stops; the first item no sooner than ``start_after``
        seconds from now (the run staggers its tasks' first requests: ``ingest.run.pipeline``). ``first``: an item
        already taken off the stream (the one that made the run open its connection), sent before the others.

        A task takes a request slot before it takes an item, so the tasks waiting for a slot hold no item (at
        C = 256, 768 tasks each holding a queued item cost 16% of the run's items/s); ``register`` releases it.
        With no item waiting, the slot is free again by the time the task asks for it: no wait, no hand-off.
        """
        slots = self._slots
        async with items, results:
            if start_after > 0:
                await anyio.sleep(start_after)
            while True:
                await slots.acquire()
                item: WorkItem | None
                try:
                    if first is not None:
                        item, first = first, None
                    else:
                        item = await receive(items)
                except BaseException:
                    slots.release()
                    raise
                if item is None or self.brakes.stopping:
                    slots.release()
                    return
                result = await self.upload(item, holding=True)
                if result is not None:
                    await send(results, result)

    async def upload(self, item: WorkItem, *, holding: bool = False) -> Result | None:
        """Rehost ``item`` if it needs it, then register it; ``None`` leaves it pending (or, for an item an earlier
        run ingested, still done). ``holding``: the caller holds a request slot, handed on to ``register``."""
        if not item.rehost:
            return await self.register(item, item.body_bytes, holding=holding)
        if holding:
            self._slots.release()  # the rehost step is not a registration request: the slot is taken again for it
        self._spare()  # the upload takes a while without a slot: another task uses it meanwhile
        assert self.rehosting is not None, "an item to rehost in a run without a rehost step"
        if item.rehost == "verify":
            changed = await self.rehosting.verify(item)
            if changed is None:
                self.counters.skipped_done += 1
            return changed
        prepared = await self.rehosting.prepare(item, self.brakes.abort)
        if prepared is None or isinstance(prepared, Result):
            return prepared
        if self.brakes.stopping:
            return None  # uploaded and journaled: the next run registers the same url
        rehost, body = prepared
        return await self.register(item, body, rehost=rehost)

    async def register(
        self, item: WorkItem, body: bytes, *, rehost: dict[str, Any] | None = None, holding: bool = False
    ) -> Result | None:
        """Attempt ``body`` under ``item``'s key until it succeeds or the policy gives up; ``None``: pending.
        ``holding``: the caller holds a request slot, used for the first attempt.

        ``attempt`` counts the requests sent (recorded); ``charged`` those that count toward the item's budget:
        not an attempt the service's outage spoiled, nor a 429 answered while the run-wide pause holds.
        """
        started, attempt, charged, conflicts = time.monotonic(), 0, 0, 0
        first_conflict: float | None = None  # when the first 409 came
        observe = self.limiter.observe
        slots = self._slots
        while True:
            if not holding:
                await slots.acquire()  # a slot first, then the rate: a token is never held while waiting for a slot
            holding = False
            try:
                await self.limiter.acquire()
                if self.brakes.stopping:
                    return None
                attempt += 1
                sent, pause_mark = time.monotonic(), self.limiter.paused_until
                answer = await self._attempt(item, body, sent, retry=attempt > 1)
            finally:
                slots.release()
            outcome = classify(answer.status, has_asset=answer.asset is not None)
            elapsed = time.monotonic() - started
            if answer.quota is not None:  # the server announced its policy: a ceiling, perhaps a spent quota
                self.limiter.advise(answer.quota, sent_at=sent, throttled=outcome is Outcome.THROTTLED)
            if outcome is Outcome.SUCCESS:
                self.health.alive(sent=sent)
                observe(sent_at=sent, throttled=False, wait=None)
                if self.replays is not None:
                    self.replays.note(answer)
                return self.records.succeeded(item, answer, attempt, elapsed, rehost)
            if outcome is Outcome.AUTH:
                self._auth_rejected(item, answer)
                return None
            self._spare()  # this item may wait now (the service, a backoff), without its slot
            verdict = await self.health.judge(answer, sent=sent)
            if verdict is Health.STOP or self.brakes.stopping:
                return None
            if verdict is Health.RESUME:
                continue
            # A 429 for a request that was out when a run-wide pause began is the pause's, not the item's.
            charged += not (outcome is Outcome.THROTTLED and self.limiter.paused_until > pause_mark)
            if outcome is Outcome.CONFLICT:
                conflicts += 1
                first_conflict = first_conflict if first_conflict is not None else time.monotonic()
            decision = decide(
                outcome,
                attempt=charged,
                elapsed=elapsed,
                server_wait=answer.server_wait,
                policy=self.policy,
                rng=self.rng,
                conflicts=conflicts,
                conflict_elapsed=0.0 if first_conflict is None else time.monotonic() - first_conflict,
                status=answer.status,
            )
            # A run-wide wait is only a candidate: the limiter pauses the run when the pattern says the account is
            # limited; otherwise this item alone waits out its own Retry-After (below).
            paused = observe(sent_at=sent, throttled=decision.pause_all is not None, wait=decision.pause_all)
            if paused:
                self._log_paused(answer, decision.pause_all or 0.0)
            if not decision.retry:
                return self.records.failed(item, answer, outcome, attempt, elapsed, decision.reason, rehost)
            self._log_retry(item, answer, attempt, decision.delay)
            if not paused:
                await self._sleep(decision.delay)
            if self.brakes.stopping:
                return None

    async def _attempt(self, item: WorkItem, body: bytes, sent: float, *, retry: bool) -> AttemptResult:
        self.counters.in_flight += 1
        try:
            answer = await self.client.upload(body, item.key)
        finally:
            self.counters.in_flight -= 1
        self.counters.count_attempt(answer.status, retry=retry, seconds=time.monotonic() - sent)
        return answer

    def _log_paused(self, answer: AttemptResult, seconds: float) -> None:
        log.info(
            "limiter.paused",
            seconds=round(answer.server_wait if answer.server_wait is not None else seconds, 3),
            status=answer.status,
            effective_rate=round(self.limiter.effective_rate, 2),
        )

    def _log_retry(self, item: WorkItem, answer: AttemptResult, attempt: int, delay: float) -> None:
        log.info(
            "upload.retry",
            manifest=item.manifest,
            line=item.line,
            key=item.key,
            attempt=attempt,
            status=answer.status,
            error=answer.error.type if answer.error else None,
            delay=round(delay, 3),
        )

    def _auth_rejected(self, item: WorkItem, answer: AttemptResult) -> None:
        info = answer.error
        if self.brakes.aborted is None:
            self._log_auth_rejected(item, answer)
        self.brakes.abort(
            AuthRejected(
                answer.status or 0,
                info.type if info else "authorization_error",
                info.message if info else "credentials rejected",
                answer.request_id,
            )
        )

    def _log_auth_rejected(self, item: WorkItem, answer: AttemptResult) -> None:
        info = answer.error
        log.error(
            "auth.rejected",
            status=answer.status,
            message=info.message if info else None,
            request_id=answer.request_id,
            manifest=item.manifest,
            line=item.line,
            hint="check FAL_KEY; unfinished items stay pending for the next run",
        )
