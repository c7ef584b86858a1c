"""The measurements of issue 5 §1, one function per section, each returning its table rows.

Rows with a baseline run it in the same process tree, alternating with ingest round by round (ingest first in
odd rounds, the baseline first in even ones), so that drift on a shared machine hits both alike; ratios are the
median of the per-round ratios.

The items/s of the throughput and latency rows are measured at the server, the same way for both clients: the
python server records the arrival time of every upload carrying an ``Idempotency-Key`` (so not ``ingest``'s
preflight probe, which has none), the harness reads and resets them after each client run, and items/s = uploads
recorded ÷ (last arrival - first arrival + the server's delay), i.e. from the first request to the last answer
(``items_per_s_at_server``). Start-up, the results index, imports, the preflight and the exit are outside that
window for both. Each client's own figure (``Measured.items_per_s``: ingest's ``run.summary``, the bare loop's own
clock) is kept as an ungated row beside it. The CPU rows come from the same runs and include start-up.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import orjson

from bench import clients, data, servers
from bench.clients import Measured
from bench.measure import json_events
from bench.profiles import Profile
from bench.table import Row, Stat

CHILD_MIN_TIMEOUT_S = 60.0  # every child's deadline is at least this …
CHILD_MIN_SPEED = 500.0  # … plus its items at this many per second (far below any healthy run)


@dataclass
class Bench:
    """What every section shares: the profile, a temp dir, the datasets written so far, servers used, a logger."""

    profile: Profile
    tmp: Path
    say: Callable[[str], None] = lambda text: print(text, file=sys.stderr, flush=True)
    prefer_nginx: bool = True  # False: the python server everywhere (to compare, or where nginx misbehaves)
    servers_used: dict[str, str] = field(default_factory=dict)  # role -> server kind, for the table header
    _datasets: dict[int, tuple[Path, Path]] = field(default_factory=dict)  # items -> (manifest, requests)

    def dataset(self, items: int, *, requests: bool = True) -> tuple[Path, Path]:
        """A seeded manifest of ``items`` rows and (if asked) the matching baseline requests file."""
        manifest = self.tmp / f"manifest-{items}.jsonl"
        requests_path = self.tmp / f"requests-{items}.tsv"
        if not manifest.exists():
            data.write_manifest(manifest, items, self.profile.seed)
        if requests and not requests_path.exists():
            data.write_requests(requests_path, items, self.profile.seed)
        return manifest, requests_path

    @contextlib.contextmanager
    def server(self, role: str, *, delay: float = 0.0, record: bool = False) -> Iterator[servers.Server]:
        """A canned server for ``role``: the fastest one unless it must wait or record."""
        fast = not (delay or record)
        context = servers.fast_server(prefer_nginx=self.prefer_nginx) if fast else None
        with context or servers.python_server(delay=delay, record=record) as server:
            self.servers_used[role] = server.kind + (" (recording arrivals)" if record else "")
            yield server


def timeout_for(items: int, *, speed: float = CHILD_MIN_SPEED) -> float:
    return CHILD_MIN_TIMEOUT_S + items / speed


A = TypeVar("A")
B = TypeVar("B")


def alternate(round_index: int, first: Callable[[], A], second: Callable[[], B]) -> tuple[A, B]:
    """Run both, in an order that alternates with the round; returns (first's, second's) results."""
    if round_index % 2 == 0:
        a = first()
        return a, second()
    b = second()
    return first(), b


def _paired_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    return statistics.median(n / d for n, d in zip(numerators, denominators, strict=True) if d)


def _check_all_ok(run: Measured, items: int, what: str) -> None:
    if run.ok != items:
        raise RuntimeError(f"{what}: {run.ok} of {items} items got a 201 ({run.summary})")


# -- 1 + 2: throughput and CPU ----------------------------------------------------------------------------------

OWN_CLOCK_NOTE = (
    "each client's own figure, not gated: ingest's run.summary items_per_s counts from the run's start (results "
    "index load, aiohttp import, preflight request and session included); the bare loop's from just before its "
    "aiohttp import and session to its last response"
)


def items_per_s_at_server(times: Sequence[float], delay: float = 0.0) -> float:
    """Uploads per second as the server saw them: how many arrived, over the time from the first arrival to the last
    answer (the last arrival + the server's ``delay`` before answering); 0.0 when that window is empty."""
    if not times:
        return 0.0
    window = max(times) - min(times) + delay
    return len(times) / window if window > 0 else 0.0


def at_server(
    server: servers.Server, items: int, what: str, client: Callable[[], Measured], *, delay: float = 0.0
) -> tuple[Measured, float]:
    """Run ``client`` against the recording ``server``: its run, and its items/s over the server's window (the same
    window for every client: its first upload's arrival to its last answer; ingest's unkeyed preflight is not in it)."""
    servers.fetch_arrivals(server)  # clear what earlier runs left
    run = client()
    _check_all_ok(run, items, what)
    times = servers.fetch_arrivals(server)
    if len(times) != items:
        raise RuntimeError(f"{what}: the server recorded {len(times)} uploads for {items} items, each answered 201")
    return run, items_per_s_at_server(times, delay)


def throughput(bench: Bench) -> list[Row]:
    """Items/s (at the server, and each client's own figure) and CPU s per 1,000 items of ``ingest run`` vs the bare
    aiohttp loop, at each C."""
    p = bench.profile
    n = p.throughput_items
    manifest, requests = bench.dataset(n)
    keys = ("i", "b", "i_own", "b_own", "ic", "bc")
    figures: dict[int, dict[str, list[float]]] = {c: {k: [] for k in keys} for c in p.concurrencies}
    with bench.server("throughput", record=True) as server:
        for r in range(p.rounds):
            for c in p.concurrencies:
                timeout = timeout_for(n)
                (run_i, at_i), (run_b, at_b) = alternate(
                    r,
                    functools.partial(at_server, server, n, "ingest", functools.partial(
                        clients.run_ingest, manifest, server.base_url, out_dir=bench.tmp,
                        name=f"tp-ingest-c{c}-r{r}", concurrency=c, timeout=timeout,
                    )),
                    functools.partial(at_server, server, n, "bare aiohttp", functools.partial(
                        clients.run_loop, "aiohttp", requests, server.base_url, out_dir=bench.tmp,
                        name=f"tp-bare-c{c}-r{r}", concurrency=c, timeout=timeout,
                    )),
                )  # fmt: skip
                f = figures[c]
                f["i"].append(at_i)
                f["b"].append(at_b)
                f["i_own"].append(run_i.items_per_s)
                f["b_own"].append(run_b.items_per_s)
                f["ic"].append(run_i.cpu_per_1k)
                f["bc"].append(run_b.cpu_per_1k)
                bench.say(
                    f"[throughput] round {r + 1}/{p.rounds} C={c}: at the server ingest {at_i:,.0f}/s, bare "
                    f"{at_b:,.0f}/s (own clocks {run_i.items_per_s:,.0f} vs {run_b.items_per_s:,.0f}); "
                    f"CPU/1k {run_i.cpu_per_1k:.3f} vs {run_b.cpu_per_1k:.3f} s"
                )
    rows = []
    for c in p.concurrencies:
        f = figures[c]
        ratio = _paired_ratio(f["i"], f["b"])
        rows.append(
            Row("throughput", "items/s at the server", f"C={c} N={n}", ",.0f", Stat.of(f["i"]), Stat.of(f["b"]),
                "bare aiohttp", ratio, "ingest/bare", "≥ 0.85× bare", ratio >= 0.85)
        )  # fmt: skip
    for c in p.concurrencies:
        f = figures[c]
        rows.append(
            Row("throughput", "items/s, client's own clock", f"C={c} N={n}", ",.0f", Stat.of(f["i_own"]),
                Stat.of(f["b_own"]), "bare aiohttp", _paired_ratio(f["i_own"], f["b_own"]), "ingest/bare",
                note=OWN_CLOCK_NOTE if c == p.concurrencies[0] else "")
        )  # fmt: skip
    for c in p.concurrencies:
        f = figures[c]
        rows.append(
            Row("cpu", "CPU s per 1k items", f"C={c} N={n}", ".3f", Stat.of(f["ic"]),
                Stat.of(f["bc"]), "bare aiohttp", _paired_ratio(f["ic"], f["bc"]), "ingest/bare")
        )  # fmt: skip
    return rows


# -- 3: latency-bound ------------------------------------------------------------------------------------------


def latency(bench: Bench) -> list[Row]:
    """Items/s as a fraction of C/latency against a server that waits before every answer: at the server (gated),
    and each client's own figure."""
    p = bench.profile
    delay = p.latency_s
    fractions: dict[int, dict[str, list[float]]] = {
        c: {k: [] for k in ("i", "b", "i_own", "b_own")} for c in p.concurrencies
    }
    sizes = {c: max(2 * c, round(c / delay * p.latency_run_s)) for c in p.concurrencies}
    with bench.server("latency", delay=delay, record=True) as server:
        for r in range(p.rounds):
            for c in p.concurrencies:
                manifest, requests = bench.dataset(sizes[c])
                ceiling = c / delay
                timeout = timeout_for(sizes[c], speed=ceiling / 4)
                (run_i, at_i), (run_b, at_b) = alternate(
                    r,
                    functools.partial(at_server, server, sizes[c], "ingest", functools.partial(
                        clients.run_ingest, manifest, server.base_url, out_dir=bench.tmp,
                        name=f"lat-ingest-c{c}-r{r}", concurrency=c, timeout=timeout,
                    ), delay=delay),
                    functools.partial(at_server, server, sizes[c], "bare aiohttp", functools.partial(
                        clients.run_loop, "aiohttp", requests, server.base_url, out_dir=bench.tmp,
                        name=f"lat-bare-c{c}-r{r}", concurrency=c, timeout=timeout,
                    ), delay=delay),
                )  # fmt: skip
                f = fractions[c]
                f["i"].append(at_i / ceiling)
                f["b"].append(at_b / ceiling)
                f["i_own"].append(run_i.items_per_s / ceiling)
                f["b_own"].append(run_b.items_per_s / ceiling)
                bench.say(
                    f"[latency] round {r + 1}/{p.rounds} C={c} N={sizes[c]}: at the server ingest {at_i:,.0f}/s "
                    f"({at_i / ceiling:.3f} of C/latency), bare {at_b:,.0f}/s ({at_b / ceiling:.3f}); own clocks "
                    f"{run_i.items_per_s / ceiling:.3f} vs {run_b.items_per_s / ceiling:.3f}"
                )
    rows = []
    name = f"fraction of C/latency ({delay * 1000:.0f} ms)"
    for c in p.concurrencies:
        f = fractions[c]
        median = statistics.median(f["i"])
        rows.append(
            Row("latency", f"{name} at the server", f"C={c} N={sizes[c]}", ".3f", Stat.of(f["i"]), Stat.of(f["b"]),
                "bare aiohttp", _paired_ratio(f["i"], f["b"]), "ingest/bare", "≥ 0.95", median >= 0.95,
                extra={"ceiling_items_per_s": c / delay})
        )  # fmt: skip
    for c in p.concurrencies:
        f = fractions[c]
        rows.append(
            Row("latency", f"{name}, client's own clock", f"C={c} N={sizes[c]}", ".3f", Stat.of(f["i_own"]),
                Stat.of(f["b_own"]), "bare aiohttp", _paired_ratio(f["i_own"], f["b_own"]), "ingest/bare",
                note=OWN_CLOCK_NOTE if c == p.concurrencies[0] else "", extra={"ceiling_items_per_s": c / delay})
        )  # fmt: skip
    return rows


# -- 4: rate limiter ------------------------------------------------------------------------------------------


def steady_rate(times: Sequence[float]) -> float:
    """Requests per second after the first second of the run (first arrival + 1 s to the last arrival)."""
    if len(times) < 2:
        return 0.0
    start = times[0] + 1.0
    later = [t for t in times if t > start]
    span = times[-1] - start
    return len(later) / span if span > 0 else 0.0


def max_window(times: Sequence[float], width: float = 1.0) -> int:
    """The most arrivals in any window ``[t, t + width)`` — the first window of the run included."""
    best = 0
    for i, t in enumerate(times):
        best = max(best, bisect.bisect_left(times, t + width, lo=i) - i)
    return best


def rate_limiter(bench: Bench) -> list[Row]:
    """Achieved steady rate and the busiest one-second window, as seen by the server, at each configured rate."""
    p = bench.profile
    results: dict[float, tuple[list[float], list[float]]] = {rate: ([], []) for rate in p.rates}
    with bench.server("rate", record=True) as server:
        for r in range(p.rounds):
            for rate in p.rates:
                items = max(10, round(rate * p.rate_run_s))
                manifest, _ = bench.dataset(items, requests=False)
                servers.fetch_arrivals(server)  # clear what earlier runs left
                run = clients.run_ingest(
                    manifest, server.base_url, out_dir=bench.tmp, name=f"rate-{rate:g}-r{r}",
                    concurrency=p.rate_concurrency, rate=rate, timeout=timeout_for(items, speed=rate / 2),
                )  # fmt: skip
                _check_all_ok(run, items, "ingest")
                times = sorted(servers.fetch_arrivals(server))
                achieved, busiest = steady_rate(times), max_window(times)
                results[rate][0].append(achieved)
                results[rate][1].append(busiest)
                bench.say(
                    f"[rate] round {r + 1}/{p.rounds} rate={rate:g} N={items}: steady {achieved:,.1f}/s, "
                    f"busiest 1 s window {busiest}"
                )
    rows = []
    for rate in p.rates:
        steady, windows = results[rate]
        cap = 1.05 * rate + 1
        rows.append(
            Row("rate", "steady rate (after 1st s)", f"rate={rate:g} C={p.rate_concurrency}", ",.1f",
                Stat.of(steady), ratio=statistics.median(steady) / rate, ratio_of="of rate", target="≥ 0.98×",
                met=statistics.median(steady) >= 0.98 * rate)
        )  # fmt: skip
        rows.append(
            Row("rate", "max in any 1 s window", f"rate={rate:g} C={p.rate_concurrency}", ",.0f",
                Stat.of(windows), ratio=max(windows) / rate, ratio_of="of rate (max)", target=f"≤ {cap:,.1f}",
                met=max(windows) <= cap)
        )  # fmt: skip
    return rows


# -- 6: resume ------------------------------------------------------------------------------------------------


def resume(bench: Bench) -> list[Row]:
    """A rerun over a results file whose lines are all done, followed by a few new items: time to the first new
    request (server-side) against a process that only parses the file once, and peak RSS against ``ingest run`` of
    the new items alone (no results file), whose difference is what resuming costs per done item."""
    p = bench.profile
    done, new = p.resume_lines, p.resume_new
    manifest, results = bench.tmp / f"resume-manifest-{done}.jsonl", bench.tmp / "resume.results.jsonl"
    started = time.perf_counter()
    data.write_manifest(manifest, done + new, p.seed)
    data.write_done_results(results, str(manifest), done, p.seed, orjson.loads(servers.canned_body())["asset"])
    bench.say(f"[resume] wrote {done:,} done lines and their manifest in {time.perf_counter() - started:.1f} s")
    fresh_manifest, _ = bench.dataset(new, requests=False)
    f: dict[str, list[float]] = {k: [] for k in ("first", "load", "exit", "rss", "scan", "scan_rss", "fresh_rss")}
    with bench.server("resume", record=True) as server:
        for r in range(p.rounds):
            scan = clients.run_scan(results, out_dir=bench.tmp, name=f"resume-scan-r{r}", timeout=timeout_for(done))
            fresh = clients.run_ingest(
                fresh_manifest, server.base_url, out_dir=bench.tmp, name=f"resume-fresh-r{r}", concurrency=64,
                timeout=timeout_for(new),
            )  # fmt: skip
            run = _resume_once(bench, server, manifest, results, name=f"resume-r{r}", expect=(done, new))
            arrivals = sorted(servers.fetch_arrivals(server))
            f["first"].append(arrivals[0] - run.child.started_mono)
            f["load"].append(_resume_loaded_s(run))
            f["exit"].append(run.child.wall_s)
            f["rss"].append(run.child.peak_rss_mb)
            f["scan"].append(scan.wall_s)
            f["scan_rss"].append(scan.peak_rss_mb)
            f["fresh_rss"].append(fresh.child.peak_rss_mb)
            bench.say(
                f"[resume] round {r + 1}/{p.rounds} {done:,} done: first new request after {f['first'][-1]:.2f} s "
                f"(index loaded at {f['load'][-1]:.2f} s), exit {f['exit'][-1]:.2f} s, peak RSS "
                f"{f['rss'][-1]:,.0f} MB (fresh run {f['fresh_rss'][-1]:,.0f} MB); parse-only scan {scan.wall_s:.2f} s"
            )
    setting = f"{done:,} done + {new} new"
    per_item = (statistics.median(f["rss"]) - statistics.median(f["fresh_rss"])) * 1024 * 1024 / done
    load, exit_s = statistics.median(f["load"]), statistics.median(f["exit"])
    return [
        Row("resume", "s to first new request", setting, ".2f", Stat.of(f["first"]), Stat.of(f["scan"]),
            "parse-only scan", _paired_ratio(f["first"], f["scan"]), "ingest/scan", "≤ 5 s (at 1M)",
            statistics.median(f["first"]) <= 5.0 if done >= 1_000_000 else None,
            note=f"index loaded after {load:.2f} s; process exit {exit_s:.2f} s",
            extra={"resume_loaded_s": f["load"], "exit_s": f["exit"], "scan_peak_rss_mb": f["scan_rss"]}),
        Row("resume", "peak RSS MB", setting, ",.0f", Stat.of(f["rss"]), Stat.of(f["fresh_rss"]),
            f"fresh run of {new}", _paired_ratio(f["rss"], f["fresh_rss"]), "resume/fresh",
            "≤ 16 B/done item (index)", per_item <= 16 if done >= 100_000 else None,
            note=f"≈ {per_item:,.0f} B per done item above a fresh run (index + anything else kept per row)",
            extra={"bytes_per_done_item": per_item}),
    ]  # fmt: skip


def _resume_once(
    bench: Bench, server: servers.Server, manifest: Path, results: Path, *, name: str, expect: tuple[int, int]
) -> Measured:
    """One rerun over ``results``, restored afterwards so that every round resumes from the same file."""
    snapshot = results.with_suffix(".snapshot")
    results.replace(snapshot)
    _copy(snapshot, results)
    servers.fetch_arrivals(server)
    try:
        run = clients.run_ingest(
            manifest, server.base_url, out_dir=bench.tmp, name=name, concurrency=64,
            timeout=timeout_for(expect[0], speed=5000), resume_from=results,
        )  # fmt: skip
    finally:
        snapshot.replace(results)
    if run.summary.get("skipped") != expect[0] or run.ok != expect[1]:
        raise RuntimeError(f"resume: expected {expect[0]} skipped and {expect[1]} sent, got {run.summary}")
    return run


def _copy(source: Path, target: Path) -> None:
    with source.open("rb") as src, target.open("wb") as dst:
        while chunk := src.read(1 << 22):
            dst.write(chunk)


def _resume_loaded_s(run: Measured) -> float:
    for event in json_events(run.child.stderr):
        if event.get("event") in ("resume.loaded", "run.started"):
            stamp = datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()
            return stamp - run.child.started_at
    return float("nan")


# -- 7: peers -------------------------------------------------------------------------------------------------


def peers(bench: Bench) -> list[Row]:
    """What a user would otherwise pick, once each, for the record."""
    p = bench.profile
    c = p.peer_concurrency
    _, small = bench.dataset(p.peer_items)
    large_manifest, large = bench.dataset(p.curl_parallel_items)
    rows = []
    with bench.server("fast") as server:
        url, tmp = server.base_url, bench.tmp
        slow_timeout = timeout_for(p.peer_items, speed=20)
        has = shutil.which
        curl_parallel = clients.curl_supports_parallel()
        candidates: list[tuple[str, int, Callable[[], Measured] | None, str]] = [
            ("GNU parallel + curl per item", p.peer_items,
             functools.partial(clients.run_parallel_curl, small, url, p.peer_items, c, out_dir=tmp,
                               timeout=slow_timeout) if has("parallel") and has("curl") else None,
             "parallel/curl"),
            ("xargs -P + curl per item", p.peer_items,
             functools.partial(clients.run_xargs_curl, small, url, p.peer_items, c, out_dir=tmp,
                               timeout=slow_timeout) if has("xargs") and has("curl") else None,
             "xargs/curl"),
            ("curl --parallel (one process)", p.curl_parallel_items,
             functools.partial(clients.run_curl_parallel, large, url, p.curl_parallel_items, c, out_dir=tmp,
                               timeout=timeout_for(p.curl_parallel_items)) if curl_parallel else None,
             "curl with --parallel"),
            ("ingest run --processes 2 (wall, start-up included)", p.curl_parallel_items,
             functools.partial(clients.run_ingest_processes, large_manifest, url, p.curl_parallel_items,
                               processes=2, concurrency=c, out_dir=tmp, timeout=timeout_for(p.curl_parallel_items)),
             ""),
            ("httpx AsyncClient loop", p.peer_items, _loop_peer(bench, "httpx", small, url, p.peer_items), "httpx"),
            ("bare aiohttp loop on uvloop", p.curl_parallel_items,
             _loop_peer(bench, "uvloop", large, url, p.curl_parallel_items), "uvloop"),
        ]  # fmt: skip
        for name, items, run, needs in candidates:
            setting = f"C={c} N={items}"
            if run is None:
                rows.append(Row("peers", f"{name} items/s", setting, ",.0f", note=f"not installed ({needs})"))
                bench.say(f"[peers] {name}: not installed ({needs})")
                continue
            measured = run()
            bench.say(f"[peers] {name}: {measured.items_per_s:,.0f} items/s ({measured.ok}/{items} got 201)")
            note = "" if measured.ok == items else f"only {measured.ok}/{items} got a 201"
            rows.append(Row("peers", f"{name} items/s", setting, ",.0f", Stat.of([measured.items_per_s]), note=note))
    return rows


def _loop_peer(bench: Bench, kind: str, requests: Path, url: str, items: int) -> Callable[[], Measured] | None:
    python = clients.python_with(kind)
    if python is None:
        return None
    c = bench.profile.peer_concurrency
    return functools.partial(
        clients.run_loop, kind, requests, url, out_dir=bench.tmp, name=f"peer-{kind}", concurrency=c,
        timeout=timeout_for(items, speed=20), python=python,
    )  # fmt: skip
