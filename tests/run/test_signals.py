"""Signals sent for real to a real ``ingest run`` subprocess: drain within the grace period, then exit 130.

First SIGINT/SIGTERM: stop reading, let in-flight requests finish (their outcomes are recorded), flush, log a
summary, exit 130. A second signal cancels at once. Either way the results file is valid and a rerun finishes.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers.processes import (
    FakeServerProcess,
    Processes,
    assert_exactly_once,
    assert_no_traceback,
    seconds_to_summary,
    strict_records,
    succeeded_by_line,
    wait_for_lines,
    write_csv_manifest,
)
from tests.helpers.records import media_url

SLACK_S = 1.0  # the contract: the run has ended (its summary logged) within the grace period plus a second
EXIT_SLACK_S = 5.0  # then the process is gone; interpreter teardown on a loaded machine is not the run's to time


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_first_signal_drains_and_exits_130_then_rerun_completes(
    tmp_path: Path, processes: Processes, signum: signal.Signals
) -> None:
    """One signal mid-run: exit 130 within grace + 1 s, every in-flight outcome recorded; a rerun finishes once."""
    grace = 2.0
    manifest = tmp_path / "media.csv"
    expected = write_csv_manifest(manifest, 300, prefix=f"drain-{signum.name}")
    results = tmp_path / "results.jsonl"
    with processes.fake_server(base_latency_s=0.3) as server:
        options = {"concurrency": 16, "rate": 200, "extra": ["--grace-period", str(grace)]}
        worker = processes.start([manifest], results, server.url, **options)
        wait_for_lines(results, 20, worker, timeout=30)
        code, took = worker.stop_with(signum, timeout=grace + 10)
        first_stats = server.stats()
        first = strict_records(results)  # flushed, no torn line
        code_rerun, rerun = processes.run([manifest], results, server.url, concurrency=32, rate=400)
        stats, assets = server.stats(), server.assets()
    print(f"\n[{signum.name}] exit {code} {took:.2f}s after the signal; first run ledger {first_stats}")
    assert_no_traceback(worker)
    assert code == 130, worker.stderr()[-4000:]
    events = worker.events()
    assert seconds_to_summary(events) < grace + SLACK_S
    assert took < grace + EXIT_SLACK_S
    signals = [e for e in events if e["event"] == "run.signal"]
    assert [(e["signal"], e["action"]) for e in signals] == [(signum.name, "draining")]
    summary = next(e for e in events if e["event"] == "run.summary")
    assert summary["exit_code"] == 130
    assert any(e["event"] == "run.interrupted" for e in events)
    # The grace period outlasts the server's latency: every asset the server created has its record.
    assert len(first) == first_stats["created"] < 300
    assert all(r["status"] == "succeeded" for r in first)

    assert code_rerun == 0, rerun.stderr()[-4000:]
    records = strict_records(results)
    assert succeeded_by_line(records) == Counter(dict.fromkeys(expected, 1))
    assert_exactly_once(assets, records, expected)
    assert stats["created"] == 300
    assert stats["duplicate_bodies"] == 0


def test_second_signal_cancels_at_once(tmp_path: Path, processes: Processes) -> None:
    """A second signal during a long grace period abandons in-flight requests at once and still exits 130 cleanly."""
    manifest = tmp_path / "media.csv"
    rows = [f"{media_url(i, 'twice')},image,item {i}" for i in range(50)]
    # Two invalid rows first: records the run writes at once, before any upload can finish.
    lines = ["url,type,prompt", "javascript:alert(1),image,x", "ftp://h.example/a.png,image,y", *rows]
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    results = tmp_path / "results.jsonl"
    with processes.fake_server(base_latency_s=5.0) as server:
        options = {"concurrency": 8, "rate": 100, "extra": ["--grace-period", "10"]}
        worker = processes.start([manifest], results, server.url, **options)
        wait_for_lines(results, 2, worker, timeout=30)
        _wait_for_requests(server, 8, timeout=10)
        worker.signal(signal.SIGTERM)
        worker.wait_for_event("run.signal", timeout=5)
        time.sleep(0.3)  # well inside the grace period, with eight requests still in flight
        assert worker.proc.poll() is None, "the worker did not wait for its in-flight requests"
        code, took = worker.stop_with(signal.SIGINT, timeout=10)
    print(f"\n[second signal] exit {code} {took:.2f}s after the second signal")
    assert_no_traceback(worker)
    assert code == 130, worker.stderr()[-4000:]
    events = worker.events()
    assert seconds_to_summary(events, signal_index=1) < 1.5
    assert took < 1.5 + EXIT_SLACK_S
    actions = [(e["signal"], e["action"]) for e in events if e["event"] == "run.signal"]
    assert actions == [("SIGTERM", "draining"), ("SIGINT", "cancelling")]
    assert any(e["event"] == "run.summary" and e["exit_code"] == 130 for e in events)
    records = strict_records(results)
    assert sorted(r["line"] for r in records) == [2, 3]
    assert all(r["status"] == "invalid" for r in records)


def test_signal_while_paused_by_server_exits_within_grace(tmp_path: Path, processes: Processes) -> None:
    """A signal while every consumer waits out a long Retry-After still ends the run within grace + 1 s."""
    grace = 1.0
    manifest = tmp_path / "media.csv"
    write_csv_manifest(manifest, 50, prefix="paused")
    results = tmp_path / "results.jsonl"
    with processes.fake_server(p_429=1.0, retry_after_s=120.0) as server:
        options = {"concurrency": 4, "rate": 100, "extra": ["--grace-period", str(grace)]}
        worker = processes.start([manifest], results, server.url, **options)
        worker.wait_for_event("limiter.paused", timeout=30)
        code, took = worker.stop_with(signal.SIGTERM, timeout=grace + 10)
        stats = server.stats()
    print(f"\n[paused] exit {code} {took:.2f}s after the signal; ledger {stats}")
    assert_no_traceback(worker)
    assert code == 130, worker.stderr()[-4000:]
    assert seconds_to_summary(worker.events()) < grace + SLACK_S
    assert took < grace + EXIT_SLACK_S
    assert stats["created"] == 0
    assert strict_records(results) == []  # nothing finished, nothing recorded: all 50 stay pending


def _wait_for_requests(server: FakeServerProcess, count: int, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while server.stats()["requests"] < count:
        assert time.monotonic() < deadline, f"fewer than {count} requests reached the server in {timeout} s"
        time.sleep(0.02)


def test_rerun_after_interrupt_replays_abandoned_requests(tmp_path: Path, processes: Processes) -> None:
    """Requests abandoned by a second signal were created anyway; the rerun's same keys get replays, not copies."""
    manifest = tmp_path / "media.csv"
    expected = write_csv_manifest(manifest, 40, prefix="abandoned")
    results = tmp_path / "results.jsonl"
    with processes.fake_server(base_latency_s=1.0) as server:
        options = {"concurrency": 8, "rate": 100, "extra": ["--grace-period", "10"]}
        worker = processes.start([manifest], results, server.url, **options)
        _wait_for_requests(server, 8, timeout=30)
        worker.signal(signal.SIGTERM)
        worker.wait_for_event("run.signal", timeout=5)
        code, _ = worker.stop_with(signal.SIGTERM, timeout=10)
        time.sleep(1.2)  # the server finishes the abandoned requests: their assets exist, unrecorded
        abandoned = server.stats()["created"]
        recorded = len(strict_records(results))
        code_rerun, rerun = processes.run([manifest], results, server.url, concurrency=40, rate=400)
        stats, assets = server.stats(), server.assets()
    print(f"\n[abandoned] created while abandoned {abandoned}; after rerun {stats}")
    assert code == 130
    assert code_rerun == 0, rerun.stderr()[-4000:]
    assert recorded < abandoned
    assert stats["replayed"] == abandoned - recorded  # every unrecorded asset is met again under its key
    assert_exactly_once(assets, strict_records(results), expected)
    assert stats["created"] == 40
    assert stats["duplicate_bodies"] == 0
