"""Peak memory per row (issue 13): ``validate``, ``run --dry-run`` and ``run`` over manifests of growing size.

Peak RSS is the child's ``VmHWM`` (``bench.measure``). ``run`` sends to the fast canned server; on the large
manifests it stops taking new items after ``Profile.memory_run_s`` seconds (``--max-duration``): its tables are
sized once for the whole manifest from the pre-count before the first item, so the peak is reached early, and a
10M-row run to the end would take an hour. Above 1M rows ``validate`` and ``--dry-run`` are stopped after twice that
long, for the same reason (their duplicate table is sized from a line count before the first row). The bytes per
row are the growth from the smallest to the largest manifest divided by the rows added: what the per-row tables cost.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench import clients
from bench.measure import ChildRun, run_child
from bench.sections import Bench, _check_all_ok, timeout_for
from bench.table import Row, Stat

LIMIT_MB = 250.0  # issue 13: every command under 250 MB at 10M rows


def _command(
    kind: str, manifest: Path, url: str, *, out_dir: Path, name: str, timeout: float, bounded: bool = False
) -> ChildRun:
    results = out_dir / f"{name}.results.jsonl"
    results.unlink(missing_ok=True)
    if kind == "validate":
        argv = [sys.executable, "-m", "ingest", "validate", str(manifest)]
    else:
        argv = [sys.executable, "-m", "ingest", "run", str(manifest), "--results", str(results), "--base-url", url]
        argv += ["--dry-run", "--log-format", "json"]
    child = run_child(argv, out_dir=out_dir, name=name, timeout=timeout, env=clients.child_env())
    return child if bounded and child.timed_out else child.check()


def memory(bench: Bench) -> list[Row]:
    """Peak RSS of validate, dry-run and run at each ``Profile.memory_rows`` size (one round each)."""
    p = bench.profile
    peaks: dict[str, dict[int, float]] = {"validate": {}, "dry-run": {}, "run": {}}
    rows = []
    with bench.server("fast") as server:
        for items in p.memory_rows:
            manifest, _ = bench.dataset(items, requests=False)
            timeout = timeout_for(items, speed=10_000) + 600
            cut = p.memory_run_s > 0 and items > 1_000_000
            for kind in ("validate", "dry-run"):
                child = _command(kind, manifest, server.base_url, out_dir=bench.tmp, name=f"mem-{kind}-{items}",
                                 timeout=2 * p.memory_run_s if cut else timeout, bounded=cut)  # fmt: skip
                peaks[kind][items] = child.peak_rss_mb
                bench.say(f"[memory] {kind} rows={items:,}: peak RSS {child.peak_rss_mb:,.1f} MB, {child.wall_s:.1f} s")
            bounded = p.memory_run_s > 0 and items > 10_000
            extra = ("--max-duration", str(p.memory_run_s)) if bounded else ()
            run = clients.run_ingest(
                manifest, server.base_url, out_dir=bench.tmp, name=f"mem-run-{items}", concurrency=64,
                timeout=timeout, extra=extra, ok_codes=(0, 1, 2),
            )  # fmt: skip
            if not bounded:
                _check_all_ok(run, items, "ingest")
            peaks["run"][items] = run.child.peak_rss_mb
            bench.say(f"[memory] run rows={items:,}: peak RSS {run.child.peak_rss_mb:,.1f} MB, {run.ok:,} sent")
        manifest.unlink(missing_ok=True)
    smallest, largest = min(p.memory_rows), max(p.memory_rows)
    for kind, by_size in peaks.items():
        for items in p.memory_rows:
            added = items - smallest
            grown = (by_size[items] - by_size[smallest]) * 1024 * 1024 / added if added else None
            what = kind
            if kind == "run" and p.memory_run_s and items > 10_000:
                what = f"run, first {p.memory_run_s:g} s"
            elif p.memory_run_s and items > 1_000_000:
                what = f"{kind}, first {2 * p.memory_run_s:g} s"
            rows.append(
                Row("memory", f"peak RSS MB, {what}", f"rows={items:,}", ",.1f", Stat.of([by_size[items]]),
                    ratio=grown, ratio_of=f"B/row above {smallest:,}" if grown is not None else "",
                    target=f"≤ {LIMIT_MB:g} MB at 10M" if items == largest else "",
                    met=by_size[items] <= LIMIT_MB if items == largest and items >= 10_000_000 else None)
            )  # fmt: skip
    return rows
