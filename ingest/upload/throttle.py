"""Telling an account limit from noise: which 429s say "this request, wait" and which say "the run is too fast".

A 429 (or a 503 with a hint) always makes its own item wait its ``Retry-After``. Whether it also slows the run is
decided here, from the pattern of recent answers, as a real limit and random rejections differ in one way: a limit's
share of 429s depends on our rate, noise's does not.

- ``LimitDetector.observe`` keeps the last ``WINDOW`` answers. The account looks limited when they hold a pattern no
  plausible noise would (``pattern``): at least 4 throttled answers making half of them or more, or, over 20 answers
  or more, at least 35% throttled. Random 429s at 10% trip it with a probability of about 1% in the first answers
  and far less later.
- While limited, the answers counted are only those to requests sent after the latest rate cut. If, after the rate
  was at least halved, ``WINDOW`` such answers still hold ``NOISE_SHARE`` or more 429s, the cut did not help: the
  rejections do not depend on the rate, so they are noise (``cut_did_not_help``), and the limiter restores its rate.
- ``accepted_rate`` is what the server let through in the last whole second (answers other than 429): under a limit,
  the server's own rate, and so where a cut lands (below it by ``LimitDetector.margin``).
"""

from __future__ import annotations

import collections
import math

WINDOW = 50  # answers the pattern is judged on
NOISE_SHARE = 0.08  # a share of 429s that halving the rate did not bring below this is noise


class LimitDetector:
    """The recent answers of one run: the throttle pattern, and the rate the server accepted."""

    __slots__ = ("_bucket_at", "_ok_now", "_ok_prev", "_recent", "_throttled", "margin")

    def __init__(self, *, now: float, margin: float = 0.03) -> None:
        self._recent: collections.deque[bool] = collections.deque(maxlen=WINDOW)  # True: throttled
        self._throttled = 0  # throttled answers in _recent
        self._bucket_at = math.floor(now)  # start of the current whole second
        self._ok_now = 0  # accepted answers in the current second
        self._ok_prev = -1  # accepted answers in the previous second (-1: none complete yet)
        self.margin = margin  # a cut lands this fraction below the accepted rate

    def __repr__(self) -> str:
        return f"LimitDetector(recent={len(self._recent)}, throttled={self._throttled}, accepted={self._ok_prev})"

    def observe(self, throttled: bool, now: float) -> None:
        """Count one answer."""
        recent = self._recent
        if len(recent) == WINDOW:
            self._throttled -= recent[0]
        recent.append(throttled)
        self._throttled += throttled
        if not throttled:
            second = math.floor(now)
            if second != self._bucket_at:
                self._ok_prev = self._ok_now if second == self._bucket_at + 1 else 0
                self._ok_now, self._bucket_at = 0, second
            self._ok_now += 1

    def pattern(self) -> bool:
        """Whether the recent answers say the account is limited."""
        n, t = len(self._recent), self._throttled
        return (t >= 4 and 2 * t >= n) or (n >= 20 and t >= 0.35 * n)

    def cut_did_not_help(self) -> bool:
        """A full window after a cut still holds ``NOISE_SHARE`` of 429s."""
        return len(self._recent) == WINDOW and self._throttled >= NOISE_SHARE * WINDOW

    def clear(self) -> None:
        """Forget the recent answers (after a cut: only answers to later requests count)."""
        self._recent.clear()
        self._throttled = 0

    def accepted_rate(self) -> float | None:
        """Answers other than 429 in the last whole second, or ``None`` before one has passed."""
        return None if self._ok_prev < 0 else float(self._ok_prev)

    def landing_rate(self, current: float, decrease: float) -> float:
        """Where a cut from ``current`` lands: just below what the server accepted, but never above ``current``
        times ``decrease`` when that is unknown or the server accepted more than we sent."""
        accepted = self.accepted_rate()
        if accepted is None or accepted <= 0 or accepted >= current:
            return current * decrease
        return max(current * decrease, accepted * (1 - self.margin))
