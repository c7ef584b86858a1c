"""Running one measured child process, and reading what the OS accounted for it.

``run_child`` waits with ``os.wait4``, which returns the child's CPU time as the kernel accounted it (user + system).

Peak memory is *not* taken from ``ru_maxrss``: Linux folds the high-water mark of the address space a process had
before ``exec`` — a copy of its parent's — into it, so every child would report at least the harness's own RSS at
spawn time. Instead a sampler thread reads ``VmHWM`` (the peak RSS of the child's own, post-``exec`` address space)
from ``/proc/PID/status`` every ``SAMPLE_S``; the kernel keeps that mark, so sampling loses only growth in the last
interval before exit. Where ``/proc`` is missing the figure falls back to ``ru_maxrss`` (an overestimate).

Every child has a deadline; past it the child's process group is killed and the run is marked as timed out.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

KIB = 1024
MIB = 1024 * 1024
SAMPLE_S = 0.02  # how often the peak-RSS sampler reads /proc/PID/status


@dataclass(frozen=True, slots=True)
class ChildRun:
    """What one child did: exit code, wall time, CPU time, peak RSS, and where its output went."""

    argv: tuple[str, ...]
    returncode: int
    wall_s: float  # from just before spawning to its exit
    cpu_s: float  # user + system, the child and any descendants it waited for
    peak_rss_mb: float  # VmHWM of the child's own address space (see the module docstring)
    stdout: Path
    stderr: Path
    timed_out: bool
    started_at: float  # time.time() just before spawning (to compare with log timestamps)
    started_mono: float  # time.monotonic() just before spawning (to compare with a server's arrival times)

    def __repr__(self) -> str:
        return (
            f"ChildRun(rc={self.returncode}, wall_s={self.wall_s:.2f}, cpu_s={self.cpu_s:.2f}, "
            f"peak_rss_mb={self.peak_rss_mb:.1f}, timed_out={self.timed_out})"
        )

    def check(self, *, ok_codes: Sequence[int] = (0,)) -> ChildRun:
        """Raise ``RuntimeError`` with the end of stderr if the child failed or timed out."""
        if self.timed_out or self.returncode not in ok_codes:
            tail = self.stderr.read_text(errors="replace")[-2000:]
            why = "timed out" if self.timed_out else f"exited {self.returncode}"
            raise RuntimeError(f"{' '.join(self.argv[:4])} … {why}:\n{tail}")
        return self


def run_child(
    argv: Sequence[str],
    *,
    out_dir: Path,
    name: str,
    timeout: float,
    env: dict[str, str] | None = None,
    shell: bool = False,
) -> ChildRun:
    """Run ``argv`` to completion (or ``timeout``), stdout and stderr to files in ``out_dir``."""
    stdout_path, stderr_path = out_dir / f"{name}.out", out_dir / f"{name}.err"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        started_at, started_mono = time.time(), time.monotonic()
        started = time.perf_counter()
        proc = subprocess.Popen(
            argv if not shell else argv[0],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
            shell=shell,
            start_new_session=True,  # its own process group, so a timeout kills the whole tree
        )
        expired, done = threading.Event(), threading.Event()
        timer = threading.Timer(timeout, _kill_group, args=(proc.pid, expired))
        timer.daemon = True
        timer.start()
        sampler = _PeakSampler(proc.pid, done)
        sampler.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            done.set()
            timer.cancel()
        wall = time.perf_counter() - started
        sampler.join(timeout=1)
    proc.returncode = os.waitstatus_to_exitcode(status)  # tell Popen it is reaped, so it never waits again
    return ChildRun(
        argv=tuple(argv),
        returncode=proc.returncode,
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=sampler.peak_kib * KIB / MIB if sampler.peak_kib else _maxrss_mb(usage.ru_maxrss),
        stdout=stdout_path,
        stderr=stderr_path,
        timed_out=expired.is_set(),
        started_at=started_at,
        started_mono=started_mono,
    )


class _PeakSampler(threading.Thread):
    """Reads the child's ``VmHWM`` until ``done`` is set; ``peak_kib`` is the largest value seen (0: none)."""

    def __init__(self, pid: int, done: threading.Event) -> None:
        super().__init__(daemon=True, name=f"peak-rss-{pid}")
        self.status = Path(f"/proc/{pid}/status")  # gone, or without VmHWM, once the child has exited
        self.done = done  # set by run_child once the child is reaped
        self.peak_kib = 0  # largest VmHWM read so far, in KiB

    def run(self) -> None:
        while not self.done.is_set():
            try:
                text = self.status.read_text()
            except OSError:
                return
            for line in text.splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_kib = max(self.peak_kib, int(line.split()[1]))
            self.done.wait(SAMPLE_S)


def _maxrss_mb(maxrss: int) -> float:
    return maxrss / MIB if sys.platform == "darwin" else maxrss * KIB / MIB  # bytes on macOS, KiB on Linux


def _kill_group(pid: int, expired: threading.Event) -> None:
    expired.set()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def json_events(path: Path) -> list[dict[str, Any]]:
    """Every JSON object line of a log file (ingest's ``--log-format json`` stderr), in order."""
    events = []
    for line in path.read_bytes().splitlines():
        if line.startswith(b"{"):
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict):
                events.append(event)
    return events


def last_event(path: Path, name: str) -> dict[str, Any] | None:
    """The last log event called ``name``, if any."""
    found = None
    for event in json_events(path):
        if event.get("event") == name:
            found = event
    return found
