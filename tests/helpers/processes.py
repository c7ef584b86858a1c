"""Helpers for the chaos, signal and hostile-input tests: real processes, real sockets, real signals.

- ``FakeServerProcess``: ``python -m ingest fake-server`` on a free loopback port, with its admin endpoints
  (``stats()``, ``assets()``, ``reset()``); always stopped by the ``fake_server_process`` context manager;
- ``Worker``: one ``python -m ingest run`` subprocess whose stdout/stderr go to files (no pipes to drain or
  leave open), with helpers to wait for a log event, for results lines, and for its exit;
- ``Processes`` (the ``processes`` fixture of ``tests/conftest.py``): one test's fake servers and workers, their
  logs and fault profiles in its folder, every worker killed and reaped when the test ends;
- readers that are strict about what a results file must be: every line complete and a JSON object.

Every wait has a deadline; every process started here is killed and reaped in a ``finally``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from tests.helpers.logs import json_events
from tests.helpers.net import free_port
from tests.helpers.records import media_url

API_KEY = "sk-chaos-4f1d9c2e7b"  # distinctive, so a test can check that it never reaches a log or the results
WORKER_BUDGET_S = 90.0  # the longest any single worker run in these tests may take


def write_profile(path: Path, **faults: float | int | str) -> Path:
    """A fault profile TOML (``FaultConfig`` fields) at ``path``, for ``--profile path``."""
    lines = [f"{name} = {json.dumps(value)}" for name, value in faults.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_csv_manifest(path: Path, count: int, *, prefix: str, repeat: Sequence[int] = ()) -> dict[int, str]:
    """A CSV manifest of ``count`` distinct valid items, then exact repeats of the items numbered in ``repeat``.

    Returns the expected status of every data line (``succeeded`` or ``duplicate``), by 1-based file line.
    """
    expected: dict[int, str] = {}
    with path.open("w", encoding="utf-8", newline="") as file:
        file.write("url,type,prompt\n")
        for i in range(count):
            file.write(f"{media_url(i, prefix)},image,item {i}\n")
            expected[i + 2] = "succeeded"
        for n, i in enumerate(repeat):
            file.write(f"{media_url(i, prefix)},image,item {i}\n")
            expected[count + 2 + n] = "duplicate"
    return expected


def _http(method: str, url: str, timeout: float = 5.0) -> bytes:
    request = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return bytes(response.read())


@dataclass
class FakeServerProcess:
    """A running ``ingest fake-server`` subprocess."""

    proc: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        """The API root to pass as ``--base-url``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.port}/_admin"

    def stats(self) -> dict[str, Any]:
        """``GET /_admin/stats``: the ledger's figures."""
        stats: dict[str, Any] = orjson.loads(_http("GET", f"{self.admin}/stats"))
        return stats

    def assets(self) -> list[dict[str, Any]]:
        """``GET /_admin/assets``: every created asset with its idempotency key and body hash."""
        assets: list[dict[str, Any]] = orjson.loads(_http("GET", f"{self.admin}/assets"))
        return assets

    def reset(self) -> None:
        """``POST /_admin/reset``: forget everything (also un-revokes the key)."""
        _http("POST", f"{self.admin}/reset")


@contextlib.contextmanager
def fake_server_process(
    profile: str | Path, log_dir: Path, *, startup_s: float = 15.0, extra: Sequence[str] = ()
) -> Iterator[FakeServerProcess]:
    """Start ``ingest fake-server --profile profile *extra`` on a free port; yield once ``/_admin/stats`` answers."""
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / f"fake-server-{port}.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ingest",
                "fake-server",
                "--port",
                str(port),
                "--profile",
                str(profile),
                "--key",
                API_KEY,
                *extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = FakeServerProcess(proc, port)
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"fake server exited with {proc.returncode}; see {log_dir}")
            try:
                server.stats()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"fake server did not answer within {startup_s} s") from None
                time.sleep(0.05)
        yield server
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes], *, term_timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if it does not exit in time; always reaped."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=term_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait(timeout=10)


@dataclass
class Worker:
    """One ``ingest run`` subprocess; its stdout and stderr are files in ``log_dir``."""

    proc: subprocess.Popen[bytes]
    stderr_path: Path
    stdout_path: Path
    started_at: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def events(self) -> list[dict[str, Any]]:
        """The JSON log events on stderr (other lines, such as the human summary, are left out)."""
        return json_events(self.stderr())

    def wait_for_event(self, name: str, *, timeout: float) -> dict[str, Any]:
        """The first log event called ``name``, waiting for it up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events():
                if event.get("event") == name:
                    return event
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited ({self.proc.returncode}) before logging {name}:\n{self.stderr()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {name} event within {timeout} s:\n{self.stderr()[-4000:]}")
            time.sleep(0.02)

    def signal(self, signum: int) -> float:
        """Send ``signum``; returns when it was sent (monotonic)."""
        os.kill(self.proc.pid, signum)
        return time.monotonic()

    def stop_with(self, signum: int, *, timeout: float) -> tuple[int, float]:
        """Send ``signum`` and wait for the exit (see ``wait``): the exit code, and seconds from the signal to it."""
        sent = self.signal(signum)
        code = self.wait(timeout=timeout)
        return code, time.monotonic() - sent

    def wait(self, timeout: float = WORKER_BUDGET_S) -> int:
        """The exit code, waiting at most ``timeout`` seconds (the worker is killed if it takes longer)."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"worker did not exit within {timeout} s:\n{self.stderr()[-4000:]}") from None

    def kill(self) -> None:
        """SIGKILL and reap (a no-op once it has exited)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


def start_worker(
    manifests: Sequence[Path],
    results: Path,
    base_url: str,
    *,
    log_dir: Path,
    concurrency: int = 8,
    rate: float = 200.0,
    extra: Sequence[str] = (),
    env: dict[str, str] | None = None,
    name: str = "worker",
) -> Worker:
    """Start ``python -m ingest run`` with JSON logs and the test API key."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stamp = f"{name}-{time.monotonic_ns()}"
    stderr_path, stdout_path = log_dir / f"{stamp}.stderr", log_dir / f"{stamp}.stdout"
    command = [sys.executable, "-m", "ingest", "run", *map(str, manifests), "--results", str(results)]
    command += ["--base-url", base_url, "--concurrency", str(concurrency), "--rate", str(rate)]
    command += ["--log-format", "json", "--progress", "off", *extra]
    with stderr_path.open("wb") as err, stdout_path.open("wb") as out:
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=worker_env(env), start_new_session=True
        )
    return Worker(proc, stderr_path, stdout_path)


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a worker: ours minus any ``INGEST_*``/``FAL_*`` setting, plus the test key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "FAL_"))}
    env["FAL_KEY"] = API_KEY
    env.update(extra or {})
    return env


def run_worker(manifests: Sequence[Path], results: Path, base_url: str, **options: Any) -> tuple[int, Worker]:
    """Run a worker to its end (bounded by ``WORKER_BUDGET_S``); its exit code and the ``Worker``."""
    timeout = options.pop("timeout", WORKER_BUDGET_S)
    worker = start_worker(manifests, results, base_url, **options)
    try:
        return worker.wait(timeout), worker
    finally:
        worker.kill()


class Processes:
    """One test's subprocesses: fake servers (``fake_server``) and ``ingest run`` workers (``start``, ``run``), with
    their logs and fault profiles in ``folder``. Every worker still running when the test ends is killed and reaped
    (``close``); a fake server lives as long as its ``with`` block."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder  # logs and fault profiles go here
        self._workers: list[Worker] = []  # every worker started, killed at close
        self._profiles = 0  # fault profiles written so far (each gets its own file)

    def __repr__(self) -> str:
        running = sum(worker.proc.poll() is None for worker in self._workers)
        return f"Processes(folder={str(self.folder)!r}, workers={len(self._workers)}, running={running})"

    def fake_server(
        self, profile: str = "none", *, extra: Sequence[str] = (), **faults: float | int | str
    ) -> contextlib.AbstractContextManager[FakeServerProcess]:
        """``ingest fake-server`` with the fault profile named ``profile`` or, given ``faults``, one made of them."""
        if faults:
            self._profiles += 1
            profile = str(write_profile(self.folder / f"faults-{self._profiles}.toml", **faults))
        return fake_server_process(profile, self.folder, extra=extra)

    def start(self, manifests: Sequence[Path], results: Path, base_url: str, **options: Any) -> Worker:
        """``start_worker`` with its logs in ``folder``; killed at the end of the test if it is still running."""
        worker = start_worker(manifests, results, base_url, log_dir=self.folder, **options)
        self._workers.append(worker)
        return worker

    def run(self, manifests: Sequence[Path], results: Path, base_url: str, **options: Any) -> tuple[int, Worker]:
        """``run_worker`` with its logs in ``folder``: a worker run to its end; its exit code and the ``Worker``."""
        return run_worker(manifests, results, base_url, log_dir=self.folder, **options)

    def close(self) -> None:
        """Kill and reap every worker still running."""
        for worker in self._workers:
            worker.kill()


def strict_records(path: Path) -> list[dict[str, Any]]:
    """Every item record of a results file, failing if any line is torn (no newline) or not a JSON object."""
    data = path.read_bytes() if path.exists() else b""
    assert not data or data.endswith(b"\n"), f"torn last line in {path}: {data[-200:]!r}"
    records = []
    for number, line in enumerate(data.splitlines(), start=1):
        assert line.strip(), f"{path}:{number}: blank line"
        record = orjson.loads(line)
        assert isinstance(record, dict), f"{path}:{number}: not an object"
        if "record" not in record:  # a run record (run_started / run_ended) is not an item's
            records.append(record)
    return records


def line_count(path: Path) -> int:
    """Complete lines in ``path`` so far (0 if it does not exist yet)."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def wait_for_lines(path: Path, count: int, worker: Worker, *, timeout: float) -> None:
    """Wait until ``path`` holds at least ``count`` complete lines, while the worker is still running."""
    deadline = time.monotonic() + timeout
    while line_count(path) < count:
        if worker.proc.poll() is not None:
            raise AssertionError(f"worker exited ({worker.proc.returncode}) early:\n{worker.stderr()[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} has {line_count(path)} < {count} lines after {timeout} s")
        time.sleep(0.02)


def assert_no_traceback(worker: Worker) -> None:
    """The worker printed no Python traceback (a crash would)."""
    text = worker.stderr() + worker.stdout_path.read_text(encoding="utf-8", errors="replace")
    assert "Traceback (most recent call last)" not in text, text[-4000:]


def succeeded_by_line(records: Sequence[dict[str, Any]]) -> Counter[int]:
    """How many ``succeeded`` records each manifest line has."""
    return Counter(r["line"] for r in records if r["status"] == "succeeded")


def assert_exactly_once(
    server_assets: Sequence[dict[str, Any]], records: Sequence[dict[str, Any]], expected: dict[int, str]
) -> None:
    """Each expected-success line has one succeeded record, and the server holds one asset per such record."""
    succeeded = succeeded_by_line(records)
    want = {line for line, status in expected.items() if status == "succeeded"}
    assert set(succeeded) == want, f"missing {sorted(want - set(succeeded))[:10]}, extra {set(succeeded) - want}"
    assert max(succeeded.values(), default=1) == 1, [line for line, n in succeeded.items() if n > 1][:10]
    bodies = Counter(asset["body_sha256"] for asset in server_assets)
    assert max(bodies.values(), default=1) == 1, "an item was created twice"
    recorded = {r["body_sha256"] for r in records if r["status"] == "succeeded"}
    assert set(bodies) == recorded
    keys = {asset["idempotency_key"] for asset in server_assets}
    assert keys == {r["key"] for r in records if r["status"] == "succeeded"}


def seconds_to_summary(events: list[dict[str, Any]], signal_index: int = 0) -> float:
    """From the worker's own clock: seconds from its ``signal_index``-th ``run.signal`` to its ``run.summary``."""
    signalled = [e for e in events if e["event"] == "run.signal"][signal_index]
    summary = next(e for e in events if e["event"] == "run.summary")
    return (
        datetime.fromisoformat(summary["timestamp"]) - datetime.fromisoformat(signalled["timestamp"])
    ).total_seconds()
