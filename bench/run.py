"""``python -m bench.run [--quick | --smoke] [--only SECTION,…]``: measure, print one table, write JSON.

The table goes to stdout, progress lines to stderr, and the figures as JSON to ``bench/out/latest.json`` (or
``--json PATH``). Everything the run writes (manifests, results files, logs) lives in a temp dir removed at the end
(``--keep-temp`` keeps it, to read the clients' logs). Servers listen on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench import faults, memory, rehost, rerun, sections, servers
from bench.profiles import FULL, PROFILES, Profile
from bench.sections import Bench
from bench.table import Row, render

# Every section, in the order they run and print: issue 13's rows first, then issue 5's.
SECTIONS: dict[str, Callable[[Bench], list[Row]]] = {
    "flaky": faults.flaky,  # completion time, flaky fake server, vs the naive client
    "throttle": faults.throttle,  # completion time, server token bucket below --rate, vs the naive client
    "throttle-headers": faults.throttle_headers,  # the same bucket announced in RateLimit-Policy / RateLimit
    "rerun": rerun.rerun,  # rerun with nothing left, JSONL and CSV, vs a stdlib parse
    "memory": memory.memory,  # peak RSS of validate / dry-run / run
    "throughput": sections.throughput,  # rows "throughput" and "cpu"
    "latency": sections.latency,
    "rate": sections.rate_limiter,
    "resume": sections.resume,
    "peers": sections.peers,
    "rehost": rehost.rehost,  # issue 12: rehost MiB/s beside curl --upload-file, peak RSS of a 1 GiB rehost
}

DEFAULT_JSON = Path(__file__).with_name("out") / "latest.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", dest="profile", const="quick", help="about a minute")
    size.add_argument("--smoke", action="store_const", dest="profile", const="smoke", help="a few seconds")
    parser.add_argument(
        "--only", type=lambda v: [s.strip() for s in v.split(",") if s.strip()], default=list(SECTIONS),
        metavar="S,S", help=f"sections to run (default all): {', '.join(SECTIONS)}",
    )  # fmt: skip
    parser.add_argument("--rounds", type=int, help="override the profile's rounds")
    parser.add_argument(
        "--server", choices=["auto", "python"], default="auto",
        help="canned server for the fast rows: nginx if installed (auto), or always the python one",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="PATH", help="where to write the figures")
    parser.add_argument("--keep-temp", action="store_true", help="keep the temp dir (its path is printed)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.only if name not in SECTIONS]
    if unknown:
        parser.error(f"--only: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    return args


def load_average() -> str:
    """The 1-minute load average: other work on the machine shows up in every figure."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"


def header(profile: Profile, bench: Bench, started: datetime, elapsed: float, loads: tuple[str, str]) -> list[str]:
    used = "; ".join(f"{role}: {kind}" for role, kind in bench.servers_used.items()) or "none"
    return [
        f"ingest benchmark — {started:%Y-%m-%d %H:%M} UTC, profile {profile.name}, {profile.rounds} round(s), "
        f"{elapsed:.0f} s",
        f"machine: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, load average {loads[0]} at start, {loads[1]} at end",
        f"servers (127.0.0.1): {used}",
        "figures: median (min–max) over rounds; ratio: median of per-round ratios; 'met' compares with issues 5 and "
        "13; items/s 'at the server': uploads recorded ÷ first arrival to last answer, the same for every client; "
        "CPU: user+sys from the kernel (wait4), start-up included; RSS: peak VmHWM",
        "",
    ]


def write_json(
    path: Path,
    profile: Profile,
    bench: Bench,
    rows: list[Row],
    started: datetime,
    elapsed: float,
    loads: tuple[str, str],
) -> None:
    document: dict[str, Any] = {
        "date": started.isoformat(),
        "profile": profile.name,
        "rounds": profile.rounds,
        "elapsed_s": round(elapsed, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "system": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(),
            "load_average_start": loads[0],
            "load_average_end": loads[1],
        },
        "servers": bench.servers_used,
        "nginx": servers.find_nginx(),
        "rows": [row.to_json() for row in rows],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))


def run(profile: Profile, sections: list[str], *, tmp: Path, prefer_nginx: bool = True) -> tuple[Bench, list[Row]]:
    """Run ``sections`` in their canonical order; the rows they produced."""
    bench = Bench(profile, tmp, prefer_nginx=prefer_nginx)
    rows: list[Row] = []
    for name, section in SECTIONS.items():
        if name in sections:
            started = time.perf_counter()
            rows += section(bench)
            bench.say(f"[{name}] done in {time.perf_counter() - started:.1f} s")
    return bench, rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    profile = PROFILES[args.profile] if args.profile else FULL
    if args.rounds is not None:
        profile = Profile(**{**{f: getattr(profile, f) for f in profile.__slots__}, "rounds": max(1, args.rounds)})
    started_at, started, load_at_start = datetime.now(UTC), time.perf_counter(), load_average()
    tmp_dir = tempfile.mkdtemp(prefix="ingest-bench-")
    try:
        bench, rows = run(profile, args.only, tmp=Path(tmp_dir), prefer_nginx=args.server == "auto")
    finally:
        if args.keep_temp:
            print(f"temp dir kept: {tmp_dir}", file=sys.stderr)
        else:
            _remove_tree(Path(tmp_dir))
    elapsed, loads = time.perf_counter() - started, (load_at_start, load_average())
    print(render(rows, header(profile, bench, started_at, elapsed, loads)))
    write_json(args.json, profile, bench, rows, started_at, elapsed, loads)
    print(f"\nfigures written to {args.json}", file=sys.stderr)
    return 0


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
