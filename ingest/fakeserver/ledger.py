"""The fake server's account of what happened: requests, answers, created assets, and figures a test checks.

The figure that matters most is ``duplicate_bodies``: how many distinct request bodies were created as
more than one asset. An exactly-once client run leaves it at 0 whatever faults were injected.
``GET /_admin/stats`` serves ``Ledger.stats()``; ``GET /_admin/assets`` serves ``Ledger.assets``.
"""

from __future__ import annotations

import bisect
from collections import Counter
from typing import Any

# The sliding window over which the peak request rate is measured (seconds).
WINDOW_S = 1.0


class Ledger:
    """Counters and records of one fake server; ``reset()`` clears them in place (references stay valid)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything, as if the server had just started."""
        self.arrivals: list[float] = []  # time.monotonic() of each upload request, in arrival order
        self.by_status: Counter[int] = Counter()  # HTTP status -> answers given (dropped ones excluded)
        self.assets: list[dict[str, Any]] = []  # {"idempotency_key", "body_sha256", "asset"} per creation
        self.replayed = 0  # 201s answered from the idempotency store
        self.conflicts_409 = 0  # answers "in progress" to a key still being processed
        self.payload_changed_422 = 0  # answers to a key reused with another body
        self.dropped = 0  # connections closed without an answer (after the asset was created)
        self.auth_failures = 0  # 401 and 403 answers
        self.foreign_urls_422 = 0  # answers rejecting a url the storage did not issue (strict_urls)
        self.keys: set[str] = set()  # idempotency keys under which an asset was created
        self._bodies: Counter[str] = Counter()  # body sha256 -> assets created with it
        self._urls: Counter[str] = Counter()  # url -> assets created with it
        self._duplicate_bodies = 0  # bodies created more than once (kept incrementally)
        self._duplicate_urls = 0  # urls created more than once (kept incrementally)
        self._first_auth_failure_at: int | None = None  # request number of the first 401/403

    @property
    def requests(self) -> int:
        """Upload requests received."""
        return len(self.arrivals)

    @property
    def created(self) -> int:
        """Assets created."""
        return len(self.assets)

    def record_arrival(self, now: float) -> int:
        """Note an upload request arriving at monotonic time ``now``; return its 1-based number."""
        self.arrivals.append(now)
        return len(self.arrivals)

    def record_answer(self, status: int) -> None:
        """Note the status of an answer sent to an upload request."""
        self.by_status[status] += 1

    def record_auth_failure(self) -> None:
        """Note a 401/403; the requests that keep arriving after the first one show a client not stopping."""
        self.auth_failures += 1
        if self._first_auth_failure_at is None:
            self._first_auth_failure_at = self.requests

    def record_created(self, asset: dict[str, Any], *, key: str | None, body_sha256: str) -> None:
        """Note a new asset, created for a request with this idempotency key (or none) and body hash."""
        self.assets.append({"idempotency_key": key, "body_sha256": body_sha256, "asset": asset})
        if key is not None:
            self.keys.add(key)
        self._bodies[body_sha256] += 1
        if self._bodies[body_sha256] == 2:
            self._duplicate_bodies += 1
        self._urls[asset["url"]] += 1
        if self._urls[asset["url"]] == 2:
            self._duplicate_urls += 1

    def stats(self) -> dict[str, Any]:
        """Every figure, JSON-ready (``by_status`` keys are strings, as in ``GET /_admin/stats``)."""
        return {
            "requests": self.requests,
            "by_status": {str(status): n for status, n in sorted(self.by_status.items())},
            "created": self.created,
            "replayed": self.replayed,
            "conflicts_409": self.conflicts_409,
            "payload_changed_422": self.payload_changed_422,
            "dropped": self.dropped,
            "duplicate_bodies": self._duplicate_bodies,
            "duplicate_urls": self._duplicate_urls,
            "keys": len(self.keys),
            "max_requests_in_any_1s": peak_in_window(self.arrivals, WINDOW_S),
            "first_1s_requests": first_window_count(self.arrivals, WINDOW_S),
            "auth_failures": self.auth_failures,
            "foreign_urls_422": self.foreign_urls_422,
            "requests_after_first_auth_failure": self._requests_after_first_auth_failure(),
        }

    def _requests_after_first_auth_failure(self) -> int:
        if self._first_auth_failure_at is None:
            return 0
        return self.requests - self._first_auth_failure_at

    def __repr__(self) -> str:
        return (
            f"Ledger(requests={self.requests}, created={self.created}, replayed={self.replayed}, "
            f"duplicate_bodies={self._duplicate_bodies}, dropped={self.dropped}, "
            f"auth_failures={self.auth_failures})"
        )


def peak_in_window(times: list[float], window: float) -> int:
    """The most ``times`` (sorted ascending) falling in any half-open interval ``[t, t + window)``."""
    # Two pointers: the busiest window can always be taken to start at an arrival.
    peak = start = 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        peak = max(peak, end - start + 1)
    return peak


def first_window_count(times: list[float], window: float) -> int:
    """How many ``times`` (sorted ascending) fall within ``window`` of the first one."""
    if not times:
        return 0
    return bisect.bisect_left(times, times[0] + window)
