"""Is a failed attempt the item's problem, or the service's? ``ServiceHealth`` tells them apart.

Two answers are ambiguous: a 404 (this item refers to something missing — or the endpoint itself is gone) and no
answer at all (this connection dropped — or the server is down, or unreachable). They are the service's when
no request sent after this attempt succeeded *and* a probe (``AssetsClient.probe``, an empty JSON body that can
create nothing) finds the service unusable too. A lone 404 amid successes never costs a probe and stays the
item's failure.

While the service is unusable (an outage), the consumer that found it holds the lock and probes with backoff
(from 1 s, doubling, at most ``min(backoff_max, OUTAGE_PROBE_MAX)`` apart); every other consumer whose attempt
fails meanwhile waits on the same lock. When a probe finds the service again, they all resume, and the attempts
the outage spoiled are not charged to their items (``Health.RESUME``). After ``max_outage`` seconds the run stops
(``ServiceUnavailable``, exit 4), leaving the items pending: no failure is recorded for them. A probe that finds
the key rejected or TLS broken stops the run with that error (exit 3).
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable

import anyio
import structlog

from ingest.errors import IngestError, ServiceUnavailable
from ingest.upload.client import AssetsClient, AttemptResult
from ingest.upload.preflight import judge

OUTAGE_PROBE_FIRST = 1.0  # seconds before the first probe of an outage
OUTAGE_PROBE_MAX = 10.0  # most seconds between two probes of an outage (a returning service is noticed soon)
AMBIGUOUS_ERRORS = frozenset({"connection_error", "tls_error"})

log = structlog.get_logger("ingest.upload.health")


class Health(enum.Enum):
    """What a consumer does with an ambiguous failed attempt."""

    ITEM = "item"  # the service is fine: the failure is the item's, handle it as the retry policy says
    RESUME = "resume"  # the service was away and is back: try again, without charging the item an attempt
    STOP = "stop"  # the run stops (outage longer than max_outage, key rejected, TLS): leave the item pending


class ServiceHealth:
    """Shared by the run's consumers; see the module docstring."""

    def __init__(
        self,
        client: AssetsClient,
        *,
        max_outage: float,
        probe_max: float = OUTAGE_PROBE_MAX,
        stop: Callable[[IngestError], None],
    ) -> None:
        self.client = client  # sends the probes
        self.max_outage = max_outage  # seconds an outage may last before the run stops
        self.probe_max = probe_max  # most seconds between two probes during an outage
        self._stop = stop  # ends the run (RunControl.abort)
        # Send time (monotonic) of the latest request the service answered usefully (a 201, a good probe): a success
        # sent before a failed attempt does not prove the service was there after it.
        self.last_alive = -math.inf
        self.last_outage_end = -math.inf  # monotonic time the last outage ended
        self.outages = 0  # outages seen this run
        self.outage_seconds = 0.0  # their total length
        self.probes = 0  # probes sent
        self.stopped: IngestError | None = None  # why the run was stopped, if it was
        self._lock = anyio.Lock()  # one prober at a time; the others wait for its finding

    def __repr__(self) -> str:
        return (
            f"ServiceHealth(outages={self.outages}, outage_seconds={self.outage_seconds:.1f}, "
            f"probes={self.probes}, stopped={self.stopped!r})"
        )

    def alive(self, *, sent: float) -> None:
        """An attempt sent at monotonic time ``sent`` succeeded: the service worked then."""
        self.last_alive = max(self.last_alive, sent)

    async def judge(self, answer: AttemptResult, *, sent: float) -> Health:
        """Whose failure is ``answer``, an attempt sent at monotonic time ``sent``?"""
        if not _ambiguous(answer) or self.last_alive > sent:
            return Health.ITEM
        async with self._lock:
            if self.stopped is not None:
                return Health.STOP
            if self.last_outage_end > sent:
                return Health.RESUME
            if self.last_alive > sent:
                return Health.ITEM
            problem = await self._probe()
            if problem is None:
                return Health.ITEM
            if not isinstance(problem, ServiceUnavailable):
                return self._give_up(problem)
            return await self._ride_out(problem)

    async def _probe(self) -> IngestError | None:
        self.probes += 1
        sent = time.monotonic()
        problem = judge(await self.client.probe(), self.client.url)
        if problem is None:
            self.alive(sent=sent)
        return problem

    async def _ride_out(self, problem: IngestError) -> Health:
        """Probe with backoff until the service is back (``RESUME``) or ``max_outage`` has passed (``STOP``)."""
        began = time.monotonic()
        self.outages += 1
        log.warning("service.outage", problem=str(problem), max_outage_s=self.max_outage)
        delay = OUTAGE_PROBE_FIRST
        try:
            while (left := began + self.max_outage - time.monotonic()) > 0:
                await anyio.sleep(min(delay, left))
                delay = min(delay * 2, self.probe_max)
                problem_now = await self._probe()
                if problem_now is None:
                    self.last_outage_end = time.monotonic()
                    log.info("service.recovered", outage_s=round(self.last_outage_end - began, 1))
                    return Health.RESUME
                if not isinstance(problem_now, ServiceUnavailable):
                    return self._give_up(problem_now)
                problem = problem_now
        finally:
            self.outage_seconds += time.monotonic() - began
        seconds = round(time.monotonic() - began)
        return self._give_up(
            ServiceUnavailable(f"{problem} (for {seconds}s, longer than max_outage = {self.max_outage:g}s)")
        )

    def _give_up(self, problem: IngestError) -> Health:
        if self.stopped is None:
            self.stopped = problem
            log.error("service.unavailable", problem=str(problem), hint="items stay pending; rerun the same command")
        self._stop(problem)
        return Health.STOP


def _ambiguous(answer: AttemptResult) -> bool:
    """A 404, or no answer because the connection failed: the item's problem or the whole service's."""
    if answer.status == 404:
        return True
    return answer.status is None and answer.error is not None and answer.error.type in AMBIGUOUS_ERRORS
