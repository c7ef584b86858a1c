"""The live progress line: items always, the rehost stage's bytes, their rate and the ETA by bytes when a run
rehosts."""

from __future__ import annotations

from typing import Any

from ingest.run.progress import describe
from ingest.terminal import human_size

FIGURES: dict[str, Any] = {
    "total": 10,
    "done": 4,
    "succeeded": 4,
    "failed": 0,
    "invalid": 0,
    "duplicate": 0,
    "skipped": 0,
    "rate": 2.0,
    "effective_rate": 10.0,
    "eta_s": 3,
    "paused_s": 0.0,
    "requests": 4,
    "retries": 0,
    "elapsed_s": 2.0,
}


def test_a_run_without_rehost_shows_no_bytes() -> None:
    """Without the rehost stage's figures the line says nothing of bytes."""
    line = describe(FIGURES)
    assert "4 of 10" in line and "rehost" not in line and "iB" not in line


def test_a_rehosting_run_shows_bytes_their_rate_what_is_left_and_the_eta_by_bytes() -> None:
    """Bytes sent, their recent rate, the bytes left ("~" while estimated) and the ETA by bytes are shown."""
    figures = {
        **FIGURES,
        "rehosted": 3,
        "rehost_reused": 1,
        "bytes_sent": 3 << 30,
        "bytes_per_s": 100 << 20,
        "bytes_left": 6 << 30,
        "bytes_left_exact": False,
        "eta_bytes_s": 61,
    }
    rehost = describe(figures).splitlines()[-1]
    assert rehost == "  rehost: 3 uploaded, 1 reused · 3.0 GiB sent · 100.0 MiB/s · ~6.0 GiB left · ETA 01:01 by bytes"
    exact = describe({**figures, "bytes_left_exact": True}).splitlines()[-1]
    assert " · 6.0 GiB left" in exact
    unknown = describe({**figures, "bytes_left": None, "eta_bytes_s": None}).splitlines()[-1]
    assert unknown.endswith("100.0 MiB/s · ETA --:-- by bytes")


def test_sizes_read_in_powers_of_1024() -> None:
    """human_size picks the largest unit the value reaches."""
    assert [human_size(v) for v in (12, 2048, 5 << 20, 1536 << 20)] == ["12 B", "2.0 KiB", "5.0 MiB", "1.5 GiB"]
