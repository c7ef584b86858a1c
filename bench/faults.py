"""Completion time under faults (issue 13): ``ingest run`` against the naive client of ``bench/naive.py`` on the
embedded fake server (``ingest fake-server``), same fault profile, same seed (the server is reset before each run).

- **flaky**: 10% random 429 with ``Retry-After: 1``, 5% 5xx, 3% commit-then-fail, 2% answers after 35 s
  (``slow_s``; smaller profiles keep the 35 s, since that stall is what a user meets).
- **throttle**: a server-side token bucket below ``--rate`` (``bucket_rate``, burst 5): the run must settle at the
  server's rate with few 429s.
- **throttle-headers**: the same bucket, announced on every answer (``RateLimit-Policy`` / ``RateLimit``): the
  announced rate is the ceiling from the first request (the preflight probe's answer carries it).

Both clients must end exactly once by the fake's ledger: every item created, no body created twice.
"""

from __future__ import annotations

import contextlib
import functools
import json
import statistics
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import clients, servers
from bench.clients import Measured
from bench.measure import run_child
from bench.sections import Bench, _paired_ratio, alternate
from bench.table import Row, Stat

NAIVE = str(Path(__file__).with_name("naive.py"))


@dataclass(frozen=True)
class FakeServer:
    base_url: str
    admin_url: str

    def reset(self) -> None:
        request = urllib.request.Request(self.admin_url + "/reset", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=10):  # loopback only
            pass

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.admin_url + "/stats", timeout=30) as resp:
            return dict(json.loads(resp.read()))


@contextlib.contextmanager
def fake_server(profile: dict[str, float | int | str], tmp: Path, name: str) -> Iterator[FakeServer]:
    """``ingest fake-server`` with ``profile`` (FaultConfig fields) in its own process on a free port."""
    toml = tmp / f"{name}.toml"
    toml.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in profile.items()))
    port = servers.free_port()
    argv = [sys.executable, "-m", "ingest", "fake-server", "--port", str(port), "--profile", str(toml)]
    argv += ["--key", clients.API_KEY]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=servers._server_env())
    try:
        servers._wait_listening(port, proc, "fake server")
        root = f"http://127.0.0.1:{port}"
        yield FakeServer(f"{root}/v1", f"{root}/_admin")
    finally:
        servers._stop(proc)


def run_naive(
    requests: Path, base_url: str, *, out_dir: Path, name: str, concurrency: int, rate: float, timeout: float
) -> Measured:
    argv = [sys.executable, NAIVE, "--url", clients.upload_url(base_url), "--requests", str(requests)]
    argv += ["--concurrency", str(concurrency), "--rate", str(rate)]
    child = run_child(argv, out_dir=out_dir, name=name, timeout=timeout, env=clients.child_env()).check()
    figures = json.loads(child.stdout.read_bytes().splitlines()[-1])
    return Measured(child, int(figures["items"]), int(figures["ok"]), float(figures["items_per_s"]), figures)


def _exactly_once(stats: dict[str, Any], items: int) -> bool:
    return int(stats["created"]) == items and int(stats["duplicate_bodies"]) == 0 and int(stats["keys"]) == items


def _measure(bench: Bench, section: str, profile: dict[str, Any], items: int, rate: float) -> list[Row]:
    p = bench.profile
    c = p.fault_concurrency
    manifest, requests = bench.dataset(items)
    f: dict[str, list[float]] = {k: [] for k in ("i", "n", "i429", "n429", "ireq", "nreq")}
    once = {"ingest": True, "naive": True}
    timeout = 60.0 + 40.0 * items / rate + 120.0
    with fake_server(profile, bench.tmp, section) as server:
        bench.servers_used[section] = f"ingest fake-server ({section} profile)"

        def measured(who: str, r: int) -> tuple[Measured, dict[str, Any]]:
            server.reset()
            if who == "ingest":
                run = clients.run_ingest(
                    manifest, server.base_url, out_dir=bench.tmp, name=f"{section}-ingest-r{r}", concurrency=c,
                    rate=rate, timeout=timeout, ok_codes=(0, 1),
                )  # fmt: skip
            else:
                run = run_naive(
                    requests, server.base_url, out_dir=bench.tmp, name=f"{section}-naive-r{r}", concurrency=c,
                    rate=rate, timeout=timeout,
                )  # fmt: skip
            return run, server.stats()

        for r in range(p.rounds):
            (run_i, st_i), (run_n, st_n) = alternate(
                r, functools.partial(measured, "ingest", r), functools.partial(measured, "naive", r)
            )
            once["ingest"] &= _exactly_once(st_i, items)
            once["naive"] &= _exactly_once(st_n, items)
            for tag, run, st in (("i", run_i, st_i), ("n", run_n, st_n)):
                f[tag].append(run.child.wall_s)
                f[tag + "429"].append(int(st["by_status"].get("429", 0)))
                f[tag + "req"].append(int(st["requests"]))
            bench.say(
                f"[{section}] round {r + 1}/{p.rounds} N={items}: ingest {run_i.child.wall_s:.1f} s "
                f"({st_i['requests']} requests, {st_i['by_status'].get('429', 0)} 429s, created {st_i['created']}, "
                f"duplicates {st_i['duplicate_bodies']}), naive {run_n.child.wall_s:.1f} s ({st_n['requests']} "
                f"requests, {st_n['by_status'].get('429', 0)} 429s, created {st_n['created']})"
            )
    ratio = _paired_ratio(f["i"], f["n"])
    share = statistics.median(a / b for a, b in zip(f["i429"], f["ireq"], strict=True) if b)
    naive_share = statistics.median(a / b for a, b in zip(f["n429"], f["nreq"], strict=True) if b)
    setting = f"N={items} C={c} rate={rate:g}"
    rows = [
        Row(section, "completion time s", setting, ".1f", Stat.of(f["i"]), Stat.of(f["n"]), "naive client", ratio,
            "ingest/naive", "≤ 1.0, both exactly once", ratio <= 1.0 and once["ingest"] and once["naive"],
            note=f"exactly once: ingest {'yes' if once['ingest'] else 'NO'}, naive {'yes' if once['naive'] else 'NO'}",
            extra={"exactly_once": once}),
        Row(section, "server 429s, share of requests", setting, ".3f", Stat.of([a / b for a, b in
            zip(f["i429"], f["ireq"], strict=True)]), Stat.of([a / b for a, b in zip(f["n429"], f["nreq"],
            strict=True)]), "naive client", share / naive_share if naive_share else None, "ingest/naive",
            "≤ 0.02" if section.startswith("throttle") else "",
            share <= 0.02 if section.startswith("throttle") else None,
            extra={"requests": f["ireq"], "naive_requests": f["nreq"]}),
    ]  # fmt: skip
    return rows


def flaky(bench: Bench) -> list[Row]:
    """Completion time of the flaky profile, ingest vs the naive client."""
    p = bench.profile
    profile = {
        "seed": p.seed, "p_429": 0.10, "retry_after_s": 1.0, "p_5xx": 0.05, "p_commit_then_fail": 0.03,
        "p_slow": 0.02, "slow_s": p.fault_slow_s,
    }  # fmt: skip
    return _measure(bench, "flaky", profile, p.fault_items, p.fault_rate)


def throttle(bench: Bench) -> list[Row]:
    """Completion time under a server token bucket at half of ``--rate``, ingest vs the naive client."""
    p = bench.profile
    profile = {"seed": p.seed, "bucket_rate": p.fault_rate / 2, "bucket_burst": 5}
    return _measure(bench, "throttle", profile, p.throttle_items, p.fault_rate)


def throttle_headers(bench: Bench) -> list[Row]:
    """The throttle profile with the bucket announced on every answer (``RateLimit-Policy: "default";q=100;w=1``,
    ``RateLimit: "default";r=…;t=…``): the same rows, to set beside the throttle ones (the naive client ignores it)."""
    p = bench.profile
    profile = {"seed": p.seed, "bucket_rate": p.fault_rate / 2, "bucket_burst": 5, "quota_headers": "ratelimit"}
    return _measure(bench, "throttle-headers", profile, p.throttle_items, p.fault_rate)
