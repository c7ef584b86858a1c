"""How a run stops early: signals, the ``--max-duration`` deadline, the failure threshold, and one ``drain``.

``RunControl`` holds the brakes. ``stop()`` stops reading the manifests and starting attempts; ``drain(grace)``
stops and gives in-flight requests what is left of ``grace`` after ``SHUTDOWN_RESERVE`` (recording, flush, fsync,
the summary and the process's exit must fit in ``grace`` too: a supervisor kills at its own deadline);
``cancel()`` abandons them now; ``abort(error)`` abandons them and ends the run with exit 3. Items not finished
stay pending: they have no record, so the next run sends them again, with the same key.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

import anyio
import structlog

from ingest.errors import IngestError, RunAborted
from ingest.run.stats import RunStats

log = structlog.get_logger("ingest.run")

SHUTDOWN_RESERVE = 1.0  # seconds of the grace period kept for the exit itself (at most a quarter of it)


def drain_budget(grace: float) -> float:
    """Seconds in-flight requests get of a ``grace``-second exit."""
    return max(0.0, grace - min(SHUTDOWN_RESERVE, grace / 4))


class RunControl:
    """The run's brakes; see the module docstring."""

    def __init__(self) -> None:
        self.producer_scope = anyio.CancelScope()  # cancelled to stop reading the manifests
        self.workers_scope = anyio.CancelScope()  # cancelled to abandon in-flight work
        self.stopping = False  # no new attempts may start
        self.interrupted = False  # a signal stopped the run
        self.stop_reason: str | None = None  # why the run stopped early without an abort (a signal, the deadline)
        self.aborted: IngestError | None = None  # why the run was aborted, if it was

    def __repr__(self) -> str:
        return f"RunControl(stopping={self.stopping}, interrupted={self.interrupted}, aborted={self.aborted!r})"

    def stop(self) -> None:
        """Stop reading and starting attempts; in-flight requests may finish."""
        self.stopping = True
        self.producer_scope.cancel()

    def drain(self, grace: float) -> None:
        """Stop, and abandon whatever is still in flight when ``drain_budget(grace)`` seconds have passed, so that the
        whole exit fits in ``grace``."""
        self.stop()
        self.workers_scope.deadline = min(self.workers_scope.deadline, anyio.current_time() + drain_budget(grace))

    def cancel(self) -> None:
        """Abandon everything in flight now."""
        self.stop()
        self.workers_scope.cancel()

    def abort(self, error: IngestError) -> None:
        """Stop at once because of ``error`` (the first reason wins)."""
        if self.aborted is None:
            self.aborted = error
        self.cancel()


async def watch_signals(control: RunControl, *, grace: float, stats: RunStats) -> None:
    """First SIGINT/SIGTERM: drain within ``grace``; the second: cancel at once."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if not control.stopping:
                log.warning(
                    "run.signal", signal=name, action="draining", grace_period_s=grace, in_flight=stats.in_flight
                )
                control.interrupted = True
                control.stop_reason = control.stop_reason or name
                control.drain(grace)
            else:
                log.warning("run.signal", signal=name, action="cancelling", in_flight=stats.in_flight)
                control.cancel()


async def stop_after(control: RunControl, seconds: float, *, grace: float, stats: RunStats) -> None:
    """``--max-duration``: stop taking new items after ``seconds``, then drain within ``grace``."""
    await anyio.sleep(seconds)
    log.info("run.max_duration_reached", max_duration_s=seconds, in_flight=stats.in_flight)
    control.stop_reason = control.stop_reason or f"max_duration {seconds:g}s reached"
    control.drain(grace)


@dataclass(frozen=True, slots=True)
class FailureThreshold:
    """Abort when too many items fail: ``max_failures`` in all, or more than ``ratio`` of the finished items once
    ``min_items`` have finished (a wrong setting should not spend a whole manifest's attempts)."""

    max_failures: int | None
    ratio: float
    min_items: int

    def crossed(self, stats: RunStats) -> str | None:
        """Why the threshold is crossed, or ``None``."""
        failed = stats.by_status.get("failed", 0)
        finished = failed + stats.by_status.get("succeeded", 0)
        if self.max_failures is not None and failed >= self.max_failures:
            return f"{failed} items failed (max_failures = {self.max_failures})"
        if finished >= self.min_items and failed / finished > self.ratio:
            return (
                f"{failed} of {finished} finished items failed, more than "
                f"{self.ratio:.0%} (failure_ratio after failure_min_items = {self.min_items})"
            )
        return None

    def check(self, stats: RunStats, control: RunControl) -> None:
        """Abort the run through ``control`` when the threshold is crossed."""
        reason = self.crossed(stats)
        if reason is None:
            return
        if control.aborted is None:
            log.error("run.aborted", reason=reason)
        control.abort(RunAborted(f"failure threshold crossed: {reason}"))
