"""The rules every reader of a results file applies, written once.

- **A success is never undone**: once a key has a ``succeeded`` record, no later record of another status changes
  what the key is (a rerun skips it; ``ingest report`` counts it succeeded; ``ingest failed`` leaves it out).
- **Timestamps** are ISO-8601 UTC with milliseconds and a ``Z`` (``2026-12-02T18:00:00.123Z``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

__all__ = ["StampClock", "error_of", "replaces", "utc_now", "utc_stamp"]


def replaces(*, new_succeeded: bool, old_succeeded: bool, new_is_later: bool) -> bool:
    """Whether a key's new record decides the key instead of its old one: later records win, but a success is
    never undone (and a success replaces any failure, whenever it was recorded)."""
    if new_succeeded != old_succeeded:
        return new_succeeded
    return new_is_later


def utc_stamp(moment: datetime, *, minutes: bool = False) -> str:
    """``moment`` in the results file's format (``minutes``: to the minute, for throughput rows)."""
    moment = moment.astimezone(UTC)
    if minutes:
        return moment.strftime("%Y-%m-%dT%H:%MZ")
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_now() -> str:
    """Now, as ``utc_stamp`` writes it."""
    return utc_stamp(datetime.now(UTC))


class StampClock:
    """``utc_now`` for a per-item path: the text is made once per millisecond (a busy run finishes several items in
    one), and reused until the clock moves on; each call reads the clock."""

    def __init__(self, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._clock_ns = clock_ns  # Unix time in nanoseconds (a fixed clock in tests)
        self._ms = -1  # the millisecond `_text` stands for
        self._text = ""  # that millisecond as `utc_stamp` writes it

    def __repr__(self) -> str:
        return f"StampClock(last={self._text!r})"

    def __call__(self) -> str:
        ms = self._clock_ns() // 1_000_000
        if ms != self._ms:
            seconds, millis = divmod(ms, 1000)
            self._ms = ms
            self._text = utc_stamp(datetime.fromtimestamp(seconds, UTC).replace(microsecond=millis * 1000))
        return self._text


def error_of(record: dict[str, Any]) -> dict[str, Any]:
    """A record's ``error`` object (``{}`` when it has none or it is malformed)."""
    error = record.get("error")
    return error if isinstance(error, dict) else {}
