"""Live counters of one run, and the summary it ends with.

Single writer per counter (the sink counts final outcomes, consumers count attempts), all on one event loop, so
no locks. ``snapshot()`` feeds progress events, the progress display and the final ``run.summary`` event.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from ingest.results.record import Status

# Upper bounds (seconds) of the request latency histogram buckets; the last bucket is +Inf.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
RECENT_WINDOW = 10.0  # seconds over which the "current" rate is measured


@dataclass(slots=True)
class RecentRate:
    """A growing counter's rate over the last ``window`` seconds, sampled at each call (call it periodically)."""

    window: float = RECENT_WINDOW
    _samples: deque[tuple[float, int]] = field(default_factory=deque)  # (time, value)

    def __call__(self, value: int) -> float:
        now, samples = time.monotonic(), self._samples
        samples.append((now, value))
        while len(samples) > 2 and now - samples[1][0] >= self.window:
            samples.popleft()
        then, before = samples[0]
        return (value - before) / (now - then) if now > then else 0.0


@dataclass(slots=True)
class RunStats:
    """Counters for one run; see the module docstring."""

    run_id: str = ""
    total: int | None = None  # rows expected, from a pre-count of file manifests (None: unknown, e.g. stdin)
    rows: int = 0  # manifest rows read (valid or not)
    queued: int = 0  # items handed to consumers
    to_rehost: int = 0  # of those, items whose media is uploaded into fal storage first
    skipped_done: int = 0  # already succeeded in an earlier run
    skipped_failed: int = 0  # failed permanently earlier, not retried without --retry-failed
    by_status: Counter[str] = field(default_factory=Counter)  # final outcomes recorded this run
    requests: int = 0  # upload attempts sent
    retries: int = 0  # attempts after an item's first
    by_http_status: Counter[str] = field(default_factory=Counter)  # "201", "429", "none" (no answer) …
    errors_by_type: Counter[str] = field(default_factory=Counter)  # final failures and invalid rows by error type
    in_flight: int = 0  # requests on the wire right now
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))  # per bucket
    latency_sum: float = 0.0  # seconds, all attempts
    started: float = field(default_factory=time.monotonic)
    _recent: RecentRate = field(default_factory=RecentRate)  # of items finished

    def __repr__(self) -> str:
        counts = ", ".join(f"{status}={self.by_status.get(status, 0)}" for status in Status)
        return f"RunStats({counts}, skipped={self.skipped}, requests={self.requests}, retries={self.retries})"

    @property
    def skipped(self) -> int:
        """Items not sent because an earlier run settled them."""
        return self.skipped_done + self.skipped_failed

    @property
    def finished(self) -> int:
        """Items with a final outcome this run."""
        return sum(self.by_status.values())

    @property
    def done(self) -> int:
        """Rows accounted for: finished this run or skipped."""
        return self.finished + self.skipped

    def count(self, status: Status, error_type: str | None) -> None:
        """Count one final outcome (called by the sink only)."""
        self.by_status[status.value] += 1
        if error_type:
            self.errors_by_type[error_type] += 1

    def count_attempt(self, status: int | None, *, retry: bool, seconds: float) -> None:
        """Count one answered (or unanswered) attempt that took ``seconds``."""
        self.requests += 1
        self.retries += retry
        self.by_http_status[str(status) if status is not None else "none"] += 1
        self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def current_rate(self) -> float:
        """Items finished per second over the last ``RECENT_WINDOW`` seconds (call it periodically)."""
        return self._recent(self.finished)

    def snapshot(self) -> dict[str, Any]:
        """The figures for progress and summary events."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return {
            "total": self.total,
            "rows": self.rows,
            "done": self.done,
            "succeeded": self.by_status.get("succeeded", 0),
            "failed": self.by_status.get("failed", 0),
            "invalid": self.by_status.get("invalid", 0),
            "duplicate": self.by_status.get("duplicate", 0),
            "skipped": self.skipped,
            "requests": self.requests,
            "retries": self.retries,
            "in_flight": self.in_flight,
            "elapsed_s": round(elapsed, 3),
            "items_per_s": round(self.finished / elapsed, 1),
        }

    def eta_seconds(self, rate: float) -> float | None:
        """Seconds left at ``rate`` items/s, or ``None`` without a total or a rate."""
        if self.total is None or rate <= 0:
            return None
        return max(0, self.total - self.done) / rate
