"""The clients under measurement, each run as a child process by ``bench.measure.run_child``:

- ``ingest run`` itself (the real CLI: results file, limiter armed, default retries, JSON logs and progress as in a
  non-TTY run), read back through its ``run.summary`` event (its ``items_per_s`` counts from the run's start:
  results index, aiohttp import and preflight included);
- the bare loops of ``bench/baselines.py`` (aiohttp; uvloop and httpx when importable), read back from their JSON;
- the shell peers a user would otherwise pick: ``curl`` per item under ``xargs -P`` or GNU ``parallel``, and one
  ``curl --parallel`` process.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.measure import ChildRun, last_event, run_child

UNBOUND_RATE = 1_000_000  # --rate for rows the limiter must not bind: armed, but far above any reachable speed
API_KEY = "bench-key"
BASELINES = str(Path(__file__).with_name("baselines.py"))


@dataclass(frozen=True, slots=True)
class Measured:
    """One client run: the child's accounting and the client's own throughput figure."""

    child: ChildRun
    items: int  # items the client finished (ingest: recorded in the results file; loops: answered)
    ok: int  # items that got a 201
    items_per_s: float  # the client's own figure (ingest: run.summary, from RunStats.started; loops: from their
    # import and session to the last response); the gated rows measure at the server instead (bench.sections)
    summary: dict[str, Any]

    @property
    def cpu_per_1k(self) -> float:
        """CPU seconds (user + system, start-up included) per 1,000 items."""
        return self.child.cpu_s / max(self.items, 1) * 1000


def child_env() -> dict[str, str]:
    """The environment of every client: an API key, and no ``INGEST_*`` settings leaking in from the caller's."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("INGEST_", "FAL_KEY"))}
    env["FAL_KEY"] = API_KEY
    env["PYTHONUNBUFFERED"] = "1"
    return env


def upload_url(base_url: str) -> str:
    return base_url.rstrip("/") + "/assets/uploads"


def run_ingest(
    manifest: Path,
    base_url: str,
    *,
    out_dir: Path,
    name: str,
    concurrency: int,
    rate: float = UNBOUND_RATE,
    timeout: float,
    resume_from: Path | None = None,
    ok_codes: tuple[int, ...] = (0,),
    extra: tuple[str, ...] = (),
) -> Measured:
    """``ingest run`` on ``manifest`` with a fresh results file, or resuming over ``resume_from`` (kept)."""
    results = resume_from or out_dir / f"{name}.results.jsonl"
    if resume_from is None:
        results.unlink(missing_ok=True)
    argv = [
        sys.executable, "-m", "ingest", "run", str(manifest),
        "--results", str(results),
        "--base-url", base_url,
        "--concurrency", str(concurrency),
        "--rate", str(rate),
        "--log-format", "json",
        "--progress", "log",
        *extra,
    ]  # fmt: skip
    child = run_child(argv, out_dir=out_dir, name=name, timeout=timeout, env=child_env()).check(ok_codes=ok_codes)
    summary = last_event(child.stderr, "run.summary")
    if summary is None:
        raise RuntimeError(f"ingest run {name}: no run.summary event in {child.stderr}")
    if resume_from is None:
        results.unlink(missing_ok=True)  # results files of big runs are hundreds of MB
    finished = sum(int(summary.get(status, 0)) for status in ("succeeded", "failed", "invalid", "duplicate"))
    return Measured(child, finished, int(summary.get("succeeded", 0)), float(summary["items_per_s"]), summary)


def run_ingest_processes(
    manifest: Path, base_url: str, items: int, *, processes: int, concurrency: int, out_dir: Path, timeout: float
) -> Measured:
    """``ingest run --processes N``: items ÷ wall time of the whole command (start-up included, as for curl)."""
    results = out_dir / f"processes-{processes}.results.jsonl"
    argv = [
        sys.executable, "-m", "ingest", "run", str(manifest),
        "--results", str(results),
        "--base-url", base_url,
        "--concurrency", str(concurrency),
        "--rate", str(UNBOUND_RATE),
        "--log-format", "json",
        "--processes", str(processes),
    ]  # fmt: skip
    child = run_child(argv, out_dir=out_dir, name=f"ingest-processes-{processes}", timeout=timeout, env=child_env())
    child.check()
    ok = 0
    for shard in out_dir.glob(f"{results.stem}.shard-*-of-{processes}.jsonl"):
        with shard.open("rb") as file:
            ok += sum(1 for line in file if b'"status":"succeeded"' in line)
        shard.unlink()
    return Measured(child, items, ok, items / child.wall_s, {})


def run_loop(
    kind: str,
    requests: Path,
    base_url: str,
    *,
    out_dir: Path,
    name: str,
    concurrency: int,
    timeout: float,
    python: str = sys.executable,
) -> Measured:
    """One bare loop of ``bench/baselines.py`` (``kind``: aiohttp, uvloop or httpx)."""
    argv = [python, BASELINES, kind, "--url", upload_url(base_url), "--requests", str(requests)]
    argv += ["--concurrency", str(concurrency)]
    child = run_child(argv, out_dir=out_dir, name=name, timeout=timeout, env=child_env()).check()
    figures = orjson.loads(child.stdout.read_bytes().splitlines()[-1])
    return Measured(child, int(figures["items"]), int(figures["ok"]), float(figures["items_per_s"]), figures)


def run_scan(results: Path, *, out_dir: Path, name: str, timeout: float) -> ChildRun:
    """The floor under resume: a process that reads and parses every line of ``results`` once, keeping nothing."""
    code = (
        "import sys, orjson\n"
        "n = 0\n"
        "with open(sys.argv[1], 'rb') as f:\n"
        "    for line in f:\n"
        "        orjson.loads(line); n += 1\n"
        "print(n)\n"
    )
    argv = [sys.executable, "-c", code, str(results)]
    return run_child(argv, out_dir=out_dir, name=name, timeout=timeout, env=child_env()).check()


# -- peers ------------------------------------------------------------------------------------------------------


def python_with(module: str) -> str | None:
    """A Python that can import ``module``: this one, ``$BENCH_HTTPX_PYTHON`` (for httpx), or ``python3`` on PATH."""
    candidates = [sys.executable]
    if module == "httpx" and os.environ.get("BENCH_HTTPX_PYTHON"):
        candidates.append(os.environ["BENCH_HTTPX_PYTHON"])
    if (system := shutil.which("python3")) is not None:
        candidates.append(system)
    for python in dict.fromkeys(candidates):
        probe = subprocess.run([python, "-c", f"import {module}"], capture_output=True, timeout=30, check=False)
        if probe.returncode == 0:
            return python
    return None


def curl_supports_parallel() -> bool:
    curl = shutil.which("curl")
    if curl is None:
        return False
    out = subprocess.run([curl, "--help", "all"], capture_output=True, text=True, timeout=10, check=False)
    return "--parallel-max" in out.stdout


def _curl_headers() -> str:
    return (
        f"-H 'Authorization: Key {API_KEY}' -H 'User-Agent: bench-curl' "
        "-H 'Content-Type: application/json' -H 'Accept: application/json'"
    )


def _count_201(child: ChildRun) -> int:
    return sum(1 for line in child.stdout.read_text().split() if line == "201")


def _shell_peer(command: str, items: int, *, out_dir: Path, name: str, timeout: float) -> Measured:
    child = run_child([command], out_dir=out_dir, name=name, timeout=timeout, env=child_env(), shell=True).check()
    ok = _count_201(child)
    return Measured(child, items, ok, items / child.wall_s, {"command": command})


def run_xargs_curl(
    requests: Path, base_url: str, items: int, concurrency: int, *, out_dir: Path, timeout: float
) -> Measured:
    """``xargs -P C`` running ``sh -c 'curl …'`` once per item (key and body as its two arguments)."""
    curl = (
        f"curl -s -o /dev/null -w '%{{http_code}}\\n' -X POST {_curl_headers()} "
        f'-H "Idempotency-Key: $0" --data-binary "$1" {shlex.quote(upload_url(base_url))}'
    )
    command = (
        f"tr '\\t' '\\n' < {shlex.quote(str(requests))} | "
        f"xargs -d '\\n' -n 2 -P {concurrency} sh -c {shlex.quote(curl)}"
    )
    return _shell_peer(command, items, out_dir=out_dir, name="peer-xargs", timeout=timeout)


def run_parallel_curl(
    requests: Path, base_url: str, items: int, concurrency: int, *, out_dir: Path, timeout: float
) -> Measured:
    """GNU ``parallel -j C`` running one ``curl`` per item (parallel shell-quotes ``{1}`` and ``{2}``)."""
    curl = (
        f"curl -s -o /dev/null -w '%{{http_code}}\\n' -X POST {_curl_headers()} "
        f"-H 'Idempotency-Key: '{{1}} --data-binary {{2}} {shlex.quote(upload_url(base_url))}"
    )
    command = (
        f"parallel --will-cite -j {concurrency} --colsep '\\t' {shlex.quote(curl)} :::: {shlex.quote(str(requests))}"
    )
    return _shell_peer(command, items, out_dir=out_dir, name="peer-parallel", timeout=timeout)


def _curl_config_value(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def run_curl_parallel(
    requests: Path, base_url: str, items: int, concurrency: int, *, out_dir: Path, timeout: float
) -> Measured:
    """One ``curl --parallel --parallel-max C`` process reading a config file of ``items`` requests."""
    config = out_dir / "curl-parallel.conf"
    url = _curl_config_value(upload_url(base_url))
    common = (
        f'request = "POST"\noutput = "/dev/null"\nwrite-out = "%{{http_code}}\\n"\n'
        f'header = "Authorization: Key {API_KEY}"\nheader = "User-Agent: bench-curl"\n'
        'header = "Content-Type: application/json"\nheader = "Accept: application/json"\n'
    )
    with requests.open("rb") as source, config.open("w") as out:
        for number, line in enumerate(source):
            if number >= items:
                break
            key, _, body = line.rstrip(b"\n").decode().partition("\t")
            if number:
                out.write("next\n")
            out.write(f'url = {url}\n{common}header = "Idempotency-Key: {key}"\n')
            out.write(f"data-binary = {_curl_config_value(body)}\n")
    command = f"curl -s --parallel --parallel-max {concurrency} -K {shlex.quote(str(config))}"
    return _shell_peer(command, items, out_dir=out_dir, name="peer-curl-parallel", timeout=timeout)
