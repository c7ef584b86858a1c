"""Server-side rate limiting: a token bucket, and the headers a 429 uses to say how long to wait.

The hint styles are the ones clients meet in the wild, newest first:

- ``ratelimit``: IETF ``draft-ietf-httpapi-ratelimit-headers`` (-08 and later): ``RateLimit-Policy`` and
  ``RateLimit: "default";r=0;t=<seconds>``;
- ``ratelimit-reset``: the same draft's older form, ``RateLimit-Limit`` / ``-Remaining`` / ``-Reset``;
- ``x-ratelimit-reset``: the common vendor header, in seconds;
- ``retry-after-seconds`` / ``retry-after-date``: RFC 9110 section 10.2.3, delta-seconds or an HTTP-date;
- ``none``: no hint at all.

With ``quota_headers`` set, every answer (a 201 too) also announces the bucket (``quota_headers``): its rate as the
policy (``q`` per ``w=1`` second), the whole tokens left as ``r``, and as ``t`` the seconds until the next token when
none is left (else until the bucket is full).

Every style carries whole seconds (all of these headers are integers or dates), rounded up so that a client
honouring the hint never retries too early.
"""

from __future__ import annotations

import math
from email.utils import formatdate

from ingest.fakeserver.config import QuotaHeaders, RateLimitHint


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` held; the caller passes the time (tests: a fake clock)."""

    def __init__(self, *, rate: float, burst: int, now: float) -> None:
        self._rate = rate  # tokens added per second
        self._burst = burst  # the bucket's capacity
        self._tokens = float(burst)  # tokens available at self._updated_at; starts full
        self._updated_at = now  # when self._tokens was last brought up to date

    def take(self, now: float) -> float:
        """Take a token if one is free and return 0.0; else return the seconds until one will be."""
        self._tokens = min(self._burst, self._tokens + (now - self._updated_at) * self._rate)
        self._updated_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate

    def left(self, now: float) -> tuple[int, int]:
        """What a quota header announces, without taking: whole tokens left, and the seconds (rounded up) until
        the next token when none is left, else until the bucket is full again."""
        tokens = min(self._burst, self._tokens + (now - self._updated_at) * self._rate)
        missing = 1.0 - tokens if tokens < 1.0 else self._burst - tokens
        return math.floor(tokens), math.ceil(missing / self._rate)

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self._rate}, burst={self._burst}, tokens={self._tokens:.2f})"


def quota_headers(style: QuotaHeaders, bucket: TokenBucket, *, quota: int, now: float) -> dict[str, str]:
    """The headers every answer carries when the server announces its quota (``FaultConfig.quota_headers``);
    ``now`` is the bucket's (monotonic) clock."""
    left, reset = bucket.left(now)
    match style:
        case "ratelimit":
            return {"RateLimit-Policy": f'"default";q={quota};w=1', "RateLimit": f'"default";r={left};t={reset}'}
        case "ratelimit-reset":
            return {"RateLimit-Limit": f"{quota}", "RateLimit-Remaining": f"{left}", "RateLimit-Reset": f"{reset}"}
        case "none":
            return {}


def rate_limit_headers(style: RateLimitHint, wait_s: float, *, quota: int, now: float) -> dict[str, str]:
    """The headers of a 429 telling the client to wait ``wait_s`` seconds; ``now`` is wall-clock time."""
    seconds = math.ceil(wait_s)
    match style:
        case "retry-after-seconds":
            return {"Retry-After": str(seconds)}
        case "retry-after-date":
            # Both dates from the same instant, so Retry-After minus Date is exactly the wait.
            sent = math.floor(now)
            return {
                "Date": formatdate(sent, usegmt=True),
                "Retry-After": formatdate(sent + seconds, usegmt=True),
            }
        case "ratelimit":
            return {"RateLimit-Policy": f'"default";q={quota};w=1', "RateLimit": f'"default";r=0;t={seconds}'}
        case "ratelimit-reset":
            return {
                "RateLimit-Limit": f"{quota}",
                "RateLimit-Remaining": "0",
                "RateLimit-Reset": f"{seconds}",
            }
        case "x-ratelimit-reset":
            return {
                "x-ratelimit-limit": f"{quota}",
                "x-ratelimit-remaining": "0",
                "x-ratelimit-reset": f"{seconds}",
            }
        case "none":
            return {}
