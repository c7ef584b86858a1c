"""Rerun with nothing left to do (issue 13): ``ingest run`` over a manifest whose every row a results file already
records as succeeded, against the floor of parsing that manifest once with the standard library (``json.loads``
per line for JSONL, ``csv.reader`` for CSV), in one process, alternating round by round.

The results file is what a real ``ingest run`` of the manifest wrote (against the canned server, C = 256), as a
nightly job's would be; the time is the child's wall time, start-up included, for both. The rounds are the reruns
after the first one: that one loads the index snapshot the run saved (``ingest.results.snapshot``), checks every
line's fingerprint and saves the finished manifest blocks (``ingest.manifest.skip``); its time is in the row's note.
"""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

from bench import clients, data
from bench.measure import ChildRun, run_child
from bench.sections import Bench, _paired_ratio, timeout_for
from bench.table import Row, Stat
from ingest.results.snapshot import snapshot_path

SCAN_JSON = "import json, sys\nwith open(sys.argv[1], 'rb') as f:\n    for line in f:\n        json.loads(line)\n"
SCAN_CSV = "import csv, sys\nwith open(sys.argv[1], newline='') as f:\n    for row in csv.reader(f):\n        pass\n"


def _scan(kind: str, manifest: Path, *, out_dir: Path, name: str, timeout: float) -> ChildRun:
    argv = [sys.executable, "-c", SCAN_CSV if kind == "csv" else SCAN_JSON, str(manifest)]
    return run_child(argv, out_dir=out_dir, name=name, timeout=timeout, env=clients.child_env()).check()


def rerun(bench: Bench) -> list[Row]:
    """Seconds of a rerun with nothing left (JSONL and CSV) vs one stdlib parse of the same manifest."""
    p = bench.profile
    lines = p.rerun_lines
    rows = []
    with bench.server("rerun") as server:
        for kind in ("jsonl", "csv"):
            started = time.perf_counter()
            manifest = bench.tmp / f"rerun-{lines}.{kind}"
            results = bench.tmp / f"rerun-{kind}.results.jsonl"
            if kind == "csv":
                data.write_csv_manifest(manifest, lines, p.seed)
            else:
                data.write_manifest(manifest, lines, p.seed)
            results.unlink(missing_ok=True)
            snapshot_path(results).unlink(missing_ok=True)
            done = clients.run_ingest(
                manifest, server.base_url, out_dir=bench.tmp, name=f"rerun-{kind}-run", concurrency=256,
                timeout=timeout_for(lines, speed=1000), resume_from=results,
            )  # fmt: skip
            if done.ok != lines:
                raise RuntimeError(f"rerun {kind}: the run before the reruns succeeded {done.ok} of {lines}")
            bench.say(
                f"[rerun] wrote {lines:,} {kind} rows and ran them ({done.child.wall_s:.1f} s of it the run, "
                f"{done.items_per_s:,.0f} items/s) in {time.perf_counter() - started:.1f} s"
            )
            times: dict[str, list[float]] = {"i": [], "b": [], "rss": []}
            timeout = timeout_for(lines, speed=5000)
            # The first rerun after the run finds the index snapshot the run saved at its end (it folded its records
            # as it wrote them, ``ingest.results.livefold``), and checks every line's fingerprint; it saves the
            # finished manifest blocks, which the later reruns skip whole. Timed apart.
            first = clients.run_ingest(
                manifest, server.base_url, out_dir=bench.tmp, name=f"rerun-{kind}-first", concurrency=64,
                timeout=timeout, resume_from=results,
            ).child.wall_s  # fmt: skip
            bench.say(f"[rerun] first rerun {kind} {lines:,} done (after the run): {first:.2f} s")
            for r in range(p.rounds):
                ingest = functools.partial(
                    clients.run_ingest, manifest, server.base_url, out_dir=bench.tmp, name=f"rerun-{kind}-r{r}",
                    concurrency=64, timeout=timeout, resume_from=results,
                )  # fmt: skip
                scan = functools.partial(
                    _scan, kind, manifest, out_dir=bench.tmp, name=f"rerun-scan-{kind}-r{r}", timeout=timeout
                )
                if r % 2 == 0:  # alternate the order, as every paired row does
                    run_i, scanned = ingest(), scan()
                else:
                    scanned, run_i = scan(), ingest()
                if run_i.summary.get("skipped") != lines or run_i.ok:
                    raise RuntimeError(f"rerun {kind}: expected {lines} skipped and none sent, got {run_i.summary}")
                times["i"].append(run_i.child.wall_s)
                times["b"].append(scanned.wall_s)
                times["rss"].append(run_i.child.peak_rss_mb)
                bench.say(
                    f"[rerun] round {r + 1}/{p.rounds} {kind} {lines:,} done: ingest {run_i.child.wall_s:.2f} s "
                    f"(peak RSS {run_i.child.peak_rss_mb:,.0f} MB), stdlib parse {scanned.wall_s:.2f} s"
                )
            results.unlink()
            snapshot_path(results).unlink(missing_ok=True)
            manifest.unlink()
            ratio = _paired_ratio(times["i"], times["b"])
            baseline = "csv.reader" if kind == "csv" else "json.loads"
            rows.append(
                Row("rerun", f"s, nothing left ({kind})", f"{lines:,} done rows", ".2f", Stat.of(times["i"]),
                    Stat.of(times["b"]), baseline, ratio, "ingest/stdlib", "≤ 1.0", ratio <= 1.0,
                    note=f"ingest peak RSS {max(times['rss']):,.0f} MB; the first rerun after the run (which saved "
                    f"the index and the blocks it finished) {first:.2f} s",
                    extra={"peak_rss_mb": times["rss"], "first_s": first, "run_s": done.child.wall_s})
            )  # fmt: skip
    return rows
