"""Records rendered when they are built: the same line the sink would write, stamped when the outcome was decided."""

from __future__ import annotations

from datetime import UTC, datetime

from ingest.results.record import Result, Status
from ingest.results.rules import StampClock, utc_stamp


def _result(**fields: object) -> Result:
    return Result("k", "m.jsonl", 3, Status.SUCCEEDED, {"url": "https://v3.fal.media/a.png", "type": "image"}, **fields)  # type: ignore[arg-type]


def test_the_stamp_clock_writes_what_utc_stamp_writes_and_reuses_it_within_a_millisecond() -> None:
    """``StampClock`` gives ``utc_stamp``'s text of the clock's millisecond, the same text until the clock moves on."""
    now = [1_764_820_516_108_999_999]
    clock = StampClock(lambda: now[0])
    expected = utc_stamp(datetime(2025, 12, 4, 3, 55, 16, 108000, tzinfo=UTC))
    assert clock() == expected == "2025-12-04T03:55:16.108Z"
    now[0] += 1
    assert clock() is clock()
    now[0] = 1_764_820_516_109_000_000
    assert clock() == "2025-12-04T03:55:16.109Z"


def test_a_rendered_record_writes_the_line_to_line_writes_with_its_stamp() -> None:
    """``render`` makes exactly the line ``to_line`` makes for the same stamp, keeps a stamp already set, and is
    neither shown nor compared."""
    rendered, plain = _result(), _result(finished_at="2026-12-04T06:35:16.108Z")
    rendered.render("2026-12-04T06:35:16.108Z")
    assert rendered.to_line() == plain.to_line()
    assert rendered == plain and repr(rendered) == repr(plain)
    kept = _result(finished_at="2026-01-01T00:00:00.000Z")
    kept.render("2026-12-04T06:35:16.108Z")
    assert kept.finished_at == "2026-01-01T00:00:00.000Z"
    assert b'"finished_at":"2026-01-01T00:00:00.000Z"' in kept.to_line()
