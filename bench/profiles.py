"""How big each benchmark run is: ``full`` (``make bench``, ~10 min at the issue's target speed), ``quick``
(``--quick``, about a minute) and ``smoke`` (``--smoke``, a few seconds; what ``tests/test_bench_smoke.py`` runs).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Profile:
    """The sizes of one benchmark run."""

    name: str
    rounds: int  # alternating rounds of every measured-against-baseline row
    throughput_items: int  # N of the throughput/CPU rows
    concurrencies: tuple[int, ...]  # C of the throughput, CPU and latency rows
    latency_s: float  # the slow server's delay
    latency_run_s: float  # about how long each latency-bound run lasts (N = C / latency × this)
    rates: tuple[float, ...]  # configured --rate of the limiter rows
    rate_run_s: float  # about how long each limiter run lasts (N = rate × this)
    rate_concurrency: int
    memory_rows: tuple[int, ...]  # manifest sizes of the memory rows
    resume_lines: int  # done lines in the results file of the resume row
    resume_new: int  # new items after the done ones (the "first new request" the row times)
    peer_items: int  # N for the slow peers (a process per item, httpx)
    peer_concurrency: int
    curl_parallel_items: int  # N for one `curl --parallel` process (fast, so as large as the throughput rows)
    fault_items: int  # N of the flaky-profile row (issue 13: 2,000)
    throttle_items: int  # N of the throttle-profile row
    fault_concurrency: int  # C of both fault rows
    fault_rate: float  # --rate of both (the throttle profile's bucket is half of it)
    fault_slow_s: float  # how late the flaky profile's 2% stalled answers come
    rerun_lines: int  # rows of the "rerun with nothing left" rows (JSONL and CSV)
    memory_run_s: float  # the memory rows' `run` stops taking items after this long (0: runs to the end)
    rehost_files: int = 8  # local files of the rehost throughput row
    rehost_file_mb: int = 64  # MiB each (single uploads: under the 100 MiB multipart threshold)
    rehost_big_mb: int = 1024  # MiB of the one file of the rehost memory row (multipart)
    seed: int = 20260523


FULL = Profile(
    name="full",
    rounds=3,
    throughput_items=20_000,
    concurrencies=(16, 64, 256),
    latency_s=0.1,
    latency_run_s=4.0,
    rates=(50, 500, 2000),
    rate_run_s=4.0,
    rate_concurrency=64,
    memory_rows=(1_000_000, 10_000_000),
    resume_lines=1_000_000,
    resume_new=10,
    peer_items=500,
    peer_concurrency=64,
    curl_parallel_items=20_000,
    fault_items=2_000,
    throttle_items=2_000,
    fault_concurrency=16,
    fault_rate=200,
    fault_slow_s=35.0,
    rerun_lines=1_000_000,
    memory_run_s=30.0,
)

QUICK = Profile(
    name="quick",
    rounds=1,
    throughput_items=2_000,
    concurrencies=(16, 64, 256),
    latency_s=0.1,
    latency_run_s=1.5,
    rates=(50, 500, 2000),
    rate_run_s=2.5,
    rate_concurrency=64,
    memory_rows=(100_000, 1_000_000),
    resume_lines=100_000,
    resume_new=10,
    peer_items=200,
    peer_concurrency=64,
    curl_parallel_items=2_000,
    fault_items=400,
    throttle_items=600,
    fault_concurrency=16,
    fault_rate=200,
    fault_slow_s=35.0,
    rerun_lines=200_000,
    memory_run_s=10.0,
    rehost_files=4,
    rehost_file_mb=32,
    rehost_big_mb=256,
)

SMOKE = Profile(
    name="smoke",
    rounds=1,
    throughput_items=300,
    concurrencies=(16,),
    latency_s=0.1,
    latency_run_s=0.5,
    rates=(500,),
    rate_run_s=1.3,
    rate_concurrency=16,
    memory_rows=(300,),
    resume_lines=1_000,
    resume_new=5,
    peer_items=20,
    peer_concurrency=8,
    curl_parallel_items=300,
    fault_items=40,
    throttle_items=60,
    fault_concurrency=8,
    fault_rate=100,
    fault_slow_s=1.0,
    rerun_lines=1_000,
    memory_run_s=0.0,
    rehost_files=2,
    rehost_file_mb=2,
    rehost_big_mb=12,
)

PROFILES = {profile.name: profile for profile in (FULL, QUICK, SMOKE)}
