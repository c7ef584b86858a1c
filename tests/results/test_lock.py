"""One writer per results file: a live run's lock refuses a second run; a killed run's lock does not block."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest.errors import ResultsLockedError
from ingest.results.lock import ResultsLock

HOLD = """
import sys, time
from pathlib import Path
from ingest.results.lock import ResultsLock
lock = ResultsLock(Path(sys.argv[1]))
lock.acquire()
print("held", flush=True)
time.sleep(60)
"""


def _holder(results: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(results)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    proc.stdout.close()
    assert line == "held"
    return proc


def test_second_writer_refused_while_first_lives(tmp_path: Path) -> None:
    """While another process holds the lock, acquiring it fails with a message naming the holder."""
    results = tmp_path / "results.jsonl"
    proc = _holder(results)
    try:
        with pytest.raises(ResultsLockedError, match=r"in use by another ingest run \(pid \d+"), ResultsLock(results):
            pass
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_stale_lock_of_killed_run_does_not_block(tmp_path: Path) -> None:
    """After the holder is SIGKILLed (its lock file left behind), the next run takes the lock."""
    results = tmp_path / "results.jsonl"
    proc = _holder(results)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert (tmp_path / "results.jsonl.lock").exists()
    deadline = time.monotonic() + 5
    with ResultsLock(results) as lock:
        assert time.monotonic() < deadline
        assert "held=True" in repr(lock)
    assert not (tmp_path / "results.jsonl.lock").exists()


def test_lock_is_reentrant_across_sequential_runs(tmp_path: Path) -> None:
    """Sequential runs in one process take and release the lock cleanly."""
    results = tmp_path / "results.jsonl"
    for _ in range(3):
        with ResultsLock(results):
            pass
