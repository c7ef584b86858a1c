"""``ingest run --processes N``: N worker processes on one machine, over disjoint shards of the key space.

It is the multi-machine mechanism (``--shard K/N``) on one machine: child K runs ``ingest run … --shard K/N`` with
its own results file ``<results>.shard-K-of-N.jsonl`` (same family as ``<results>``, so later runs resume from all
of them, whatever their shard layout) and a rate of ``--rate / N``. The parent forwards SIGINT/SIGTERM to every
child, waits, and exits with the most serious of their exit codes.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from ingest.errors import (
    EXIT_ABORTED,
    EXIT_INTERRUPTED,
    EXIT_ITEMS_FAILED,
    EXIT_OK,
    EXIT_SERVICE_UNAVAILABLE,
    EXIT_USAGE,
    UsageError,
)
from ingest.results.naming import shard_results_path

# Most serious first: what the parent exits with when children disagree.
SEVERITY = (EXIT_ABORTED, EXIT_USAGE, EXIT_SERVICE_UNAVAILABLE, EXIT_INTERRUPTED, EXIT_ITEMS_FAILED, EXIT_OK)


def strip_options(argv: Sequence[str], names: Sequence[str]) -> list[str]:
    """``argv`` without ``--name VALUE`` / ``--name=VALUE`` for each of ``names``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in names:
            skip = True
            continue
        if any(arg.startswith(f"{name}=") for name in names):
            continue
        out.append(arg)
    return out


def combine(codes: Sequence[int]) -> int:
    """The most serious exit code (unknown codes count as aborted)."""
    for code in SEVERITY:
        if code in codes:
            return code
    return EXIT_ABORTED if codes else EXIT_OK


def run_processes(run_argv: Sequence[str], *, count: int, results: Path) -> int:
    """Start ``count`` children of ``ingest run`` (``run_argv`` minus --processes/--results/--shard), wait for all."""
    if any(arg == "-" for arg in run_argv):
        raise UsageError("--processes cannot share stdin ('-'); give manifest files")
    base = strip_options(run_argv, ("--processes", "--results", "--shard"))
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ingest",
                *base,
                "--shard",
                f"{k}/{count}",
                "--results",
                str(shard_results_path(results, k, count)),
                "--progress",
                "log",
                "--family-lock-held",
            ]
        )
        for k in range(count)
    ]

    def forward(signum: int, _frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        codes = [child.wait() for child in children]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(
        f"ingest: {count} processes finished with exit codes {codes}; results: "
        f"{shard_results_path(results, 0, count).name} … (ingest report {results.parent}/"
        f"{results.stem}.shard-*-of-{count}{results.suffix})",
        file=sys.stderr,
    )
    return combine(codes)
