"""Seeded fault decisions: whether to throttle a request, fail it, delay it, or fail it after the commit.

All randomness comes from one ``random.Random(seed)``, drawn only for faults whose probability is above 0,
so a profile with one fault enabled sees the same sequence whatever the others default to. The order in
which a request meets the faults is fixed by the app: throttle, server error, delay, slow, commit failure.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Literal

from ingest.fakeserver.config import FaultConfig
from ingest.fakeserver.ratelimit import TokenBucket, quota_headers

CommitFailure = Literal["error", "drop"]  # answer 500, or close the connection without an answer

SERVER_ERRORS = (500, 502, 503)


class Faults:
    """The fault decisions of one server, drawn from its seeded RNG and token bucket."""

    def __init__(self, config: FaultConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock  # monotonic seconds, for the token bucket
        self.reset()

    def reset(self) -> None:
        """Start over from the seed, with a full bucket."""
        self._rng = random.Random(self.config.seed)  # the only source of randomness
        rate, burst = self.config.bucket_rate, self.config.bucket_burst
        self._bucket = None if rate is None else TokenBucket(rate=rate, burst=burst, now=self._clock())

    def throttle(self) -> float | None:
        """Seconds to announce in a 429 if this request is throttled (empty bucket, random 429), else None."""
        if self._bucket is not None:
            wait = self._bucket.take(self._clock())
            if wait > 0.0:
                return wait
        if self._hit(self.config.p_429):
            return self.config.retry_after_s
        return None

    def quota_headers(self, *, quota: int) -> dict[str, str]:
        """The headers announcing the bucket on every answer (``FaultConfig.quota_headers``); none without one."""
        if self._bucket is None or self.config.quota_headers == "none":
            return {}
        return quota_headers(self.config.quota_headers, self._bucket, quota=quota, now=self._clock())

    def server_error(self) -> int | None:
        """A 5xx status to answer with before doing anything, or None."""
        if self._hit(self.config.p_5xx):
            return self._rng.choice(SERVER_ERRORS)
        return None

    def delay(self) -> float:
        """Seconds of latency to add before processing: the base latency plus, sometimes, a random extra."""
        extra = 0.0
        if self._hit(self.config.p_latency):
            extra = self._rng.uniform(self.config.latency_min_s, self.config.latency_max_s)
        return self.config.base_latency_s + extra

    def slow(self) -> float:
        """Seconds to stall before creating the asset (meant to outlast the client's timeout), or 0."""
        return self.config.slow_s if self._hit(self.config.p_slow) else 0.0

    def commit_failure(self) -> CommitFailure | None:
        """How to fail after the asset was created and stored, or None to answer 201."""
        if self._hit(self.config.p_commit_then_fail):
            return "error" if self._rng.random() < 0.5 else "drop"
        return None

    def _hit(self, probability: float) -> bool:
        return probability > 0.0 and self._rng.random() < probability

    def __repr__(self) -> str:
        return f"Faults(seed={self.config.seed}, bucket={self._bucket!r})"
