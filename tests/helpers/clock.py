"""A fake monotonic clock whose ``sleep`` advances time at once: limiter and backoff tests without real sleeps."""

from __future__ import annotations

import anyio.lowlevel


class FakeClock:
    """Call it for the time; ``await clock.sleep(s)`` moves it ``s`` seconds on (and yields to the loop once)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start  # seconds; starts well above 0 so "never" (-inf) and "0" differ from real times
        self.slept = 0.0  # total seconds slept through this clock

    def __repr__(self) -> str:
        return f"FakeClock(now={self.now}, slept={self.slept})"

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass."""
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of fake time."""
        seconds = max(0.0, seconds)
        self.now += seconds
        self.slept += seconds
        await anyio.lowlevel.checkpoint()
