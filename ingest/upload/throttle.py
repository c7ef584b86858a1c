"""Telling an account limit from noise: which 429s say "this request, wait" and which say "the run is too fast".

A 429 (or a 503 with a hint) always makes its own item wait its ``Retry-After``. Whether it also slows the run is
decided here, from the pattern of recent answers, as a real limit and random rejections differ in one way: a limit's
share of 429s depends on our rate, noise's does not.

- ``LimitDetector.observe`` keeps the last ``WINDOW`` answers. The account looks limited when they hold a pattern no
  plausible noise would (``pattern``): at least 4 throttled answers making half of them or more (or, until the
  window is full, 5 making half of the answers since the first 429, so that a server's initial burst allowance does
  not hide its limit), or, over 20 answers or more, at least 35% throttled. Random 429s at 10% trip it with a
  probability of about 1.3% in the first 50 answers (then the cut does not help, so the rate comes back; 0.6%
  without the early rule, 2.8% with it at 4) and far less later.
- While limited, the answers counted are only those to requests sent after the latest rate cut. If, after the rate
  was at least halved, ``WINDOW`` such answers still hold ``NOISE_SHARE`` or more 429s, the cut did not help: the
  rejections do not depend on the rate, so they are noise (``cut_did_not_help``), and the limiter restores its rate.
- ``accepted_rate`` is what the server let through (answers other than 429) over the last second since the current
  rate began (a pause's silence is not counted): under a limit, the server's own rate, and so where a cut lands
  (below it by ``LimitDetector.margin``). Measured over less than ``MIN_SPAN`` (the first cluster of a run), it is
  the server's initial burst more than its rate: the first cut then lands a margin below half.
"""

from __future__ import annotations

import collections
import math

WINDOW = 50  # answers the pattern is judged on
NOISE_SHARE = 0.08  # a share of 429s that halving the rate did not bring below this is noise
SLOT, SLOTS = 0.1, 10  # the accepted rate is counted in 100 ms slots over the last second
MIN_SPAN = 0.3  # seconds: an accepted rate measured over less is a burst, not the server's rate


class LimitDetector:
    """The recent answers of one run: the throttle pattern, and the rate the server accepted."""

    __slots__ = ("_counts", "_ids", "_lead", "_recent", "_throttled", "margin")

    def __init__(self, *, now: float, margin: float = 0.03) -> None:
        self._recent: collections.deque[bool] = collections.deque(maxlen=WINDOW)  # True: throttled
        self._throttled = 0  # throttled answers in _recent
        self._lead = 0  # accepted answers before the first throttled one, while _recent is not yet full
        # Accepted answers per SLOT-long slot of the last SLOTS (a ring: _ids[i] is the slot _counts[i] counts).
        self._counts = [0] * SLOTS
        self._ids = [-1] * SLOTS
        self.margin = margin  # a cut lands this fraction below the accepted rate

    def __repr__(self) -> str:
        return f"LimitDetector(recent={len(self._recent)}, throttled={self._throttled})"

    def observe(self, throttled: bool, now: float) -> None:
        """Count one answer."""
        recent = self._recent
        if len(recent) == WINDOW:
            self._throttled -= recent[0]
        elif not (throttled or self._throttled):
            self._lead += 1
        recent.append(throttled)
        self._throttled += throttled
        if not throttled:
            slot = int(now / SLOT)
            i = slot % SLOTS
            if self._ids[i] != slot:
                self._ids[i], self._counts[i] = slot, 0
            self._counts[i] += 1

    def pattern(self) -> bool:
        """Whether the recent answers say the account is limited."""
        n, t = len(self._recent), self._throttled
        # Until the window is full, five 429s that are half of the answers since the first one are a pattern too:
        # a server's burst allowance (its bucket starts full) would otherwise hide the first seconds' limit behind
        # its successes. (Four would tell it one 429 sooner, at twice the false alarms under 10% noise.)
        early = n < WINDOW and t >= 5 and 2 * t >= n - self._lead
        return (t >= 4 and 2 * t >= n) or early or (n >= 20 and t >= 0.35 * n)

    def cut_did_not_help(self) -> bool:
        """A full window after a cut still holds ``NOISE_SHARE`` of 429s."""
        return len(self._recent) == WINDOW and self._throttled >= NOISE_SHARE * WINDOW

    def clear(self) -> None:
        """Forget the recent answers (after a cut: only answers to later requests count)."""
        self._recent.clear()
        self._throttled = self._lead = 0

    def accepted_rate(self, now: float, since: float) -> float | None:
        """Answers other than 429 per second over the last second after ``since`` (when the current rate began),
        or ``None`` when that is less than ``MIN_SPAN``: too short a time to tell a burst from a rate."""
        first = max(math.ceil(max(since, now - SLOTS * SLOT) / SLOT), int(now / SLOT) - SLOTS + 1)
        span = now - first * SLOT
        if span < MIN_SPAN:
            return None
        ids, counts = self._ids, self._counts
        accepted = sum(counts[i] for i in range(SLOTS) if ids[i] >= first)
        return accepted / span

    def landing_rate(self, current: float, decrease: float, *, now: float, since: float) -> tuple[float, float | None]:
        """Where a cut from ``current`` lands, and the server's rate if that was measured.

        Just below what the server accepted since the current rate began, but never below ``current × decrease``.
        If it accepted about all we sent, our rate is its limit: a margin below it, unless the 429s since the latest
        cut are too many for a rate just over a limit (``NOISE_SHARE``): then ``current × decrease``. Unmeasured (too
        short a time, as in the first cluster of 429s of a run), the cut lands a margin below ``current × decrease``:
        the run starts over conservatively and climbs back."""
        accepted = self.accepted_rate(now, since)
        if accepted is None or accepted <= 0:
            return current * decrease * (1 - self.margin), None
        if accepted < current:
            return max(current * decrease, accepted * (1 - self.margin)), accepted
        if self._throttled < NOISE_SHARE * len(self._recent):
            return current * (1 - self.margin), current
        return current * decrease, None
