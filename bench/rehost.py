"""Rehost rows (issue 12): upload throughput beside ``curl --upload-file``, and peak memory of a 1 GiB rehost.

Both sides upload the same local files to the same ``ingest fake-server`` (its storage API at the root) in the same
run, alternating rounds. ingest runs ``ingest run manifest --rehost auto`` end to end (token, uploads, the
``uploaded`` journal, registration, results file), start-up included; curl gets a token once (not timed) and then
``curl --parallel --parallel-max U`` POSTs every file with ``--upload-file`` (one request each, no parts, no
hashing, no record). ``U`` is ingest's ``--upload-concurrency``. Bytes/s = total file bytes ÷ wall time.

Both sides start cold, as a user's command would: ingest's start-up (interpreter, imports, settings, preflight) is
about 0.5-1 s of every run, so it weighs more the fewer bytes a row moves. Its modules are byte-compiled first
(``compile_product``), as an installed wheel's are: an environment with ``PYTHONDONTWRITEBYTECODE`` would otherwise
make every run compile ingest from source again (~0.1 s).

The memory row rehosts one file of ``Profile.rehost_big_mb`` (1 GiB in the full profile: a multipart upload of
10 MiB parts) with default settings; its peak RSS is the child's ``VmHWM``.
"""

from __future__ import annotations

import compileall
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ingest
from bench import clients
from bench.measure import ChildRun, run_child
from bench.sections import Bench, alternate
from bench.servers import free_port
from bench.table import Row, Stat

MIB = 1 << 20
UPLOAD_CONCURRENCY = 4  # ingest's default --upload-concurrency, and curl's --parallel-max
MEMORY_GOAL_MB = 200.0


@contextmanager
def fake_storage(tmp: Path) -> Iterator[str]:
    """``ingest fake-server`` in a child process; its root url (``/v1`` is the Assets API)."""
    port = free_port()
    log = (tmp / f"fake-storage-{port}.log").open("wb")
    argv = [sys.executable, "-m", "ingest", "fake-server", "--port", str(port), "--key", clients.API_KEY]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    root = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{root}/_admin/stats", timeout=1).read()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"fake server exited {proc.returncode}") from None
                time.sleep(0.05)
        yield root
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def compile_product() -> None:
    """Byte-compile ingest's own modules (``__pycache__``, as pip does for an installed wheel), quietly."""
    compileall.compile_dir(Path(ingest.__file__).parent, quiet=1)


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _write_files(directory: Path, count: int, size: int, *, prefix: str) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    block = os.urandom(MIB)
    paths = []
    for n in range(count):
        path = directory / f"{prefix}{n:03d}.mp4"
        if not path.exists() or path.stat().st_size != size:
            with path.open("wb") as out:
                for offset in range(0, size, MIB):
                    out.write(block[: min(MIB, size - offset)])
        paths.append(path)
    return paths


def _manifest(path: Path, files: list[Path]) -> Path:
    path.write_text("".join(json.dumps({"url": str(f)}) + "\n" for f in files))
    return path


def _ingest(bench: Bench, manifest: Path, root: str, name: str, *, extra: tuple[str, ...] = ()) -> ChildRun:
    results = bench.tmp / f"{name}.results.jsonl"
    for stale in (results, results.with_name(results.name + ".rehost.jsonl")):
        stale.unlink(missing_ok=True)
    argv = [
        sys.executable, "-m", "ingest", "run", str(manifest), "--results", str(results),
        "--base-url", f"{root}/v1", "--storage-url", root, "--rate", "1000", "--log-format", "json",
        "--progress", "off", "--upload-concurrency", str(UPLOAD_CONCURRENCY), *extra,
        "--key-namespace", name,  # every run its own keys: the one fake remembers the keys of earlier rounds
    ]  # fmt: skip
    return run_child(argv, out_dir=bench.tmp, name=name, timeout=1800, env=clients.child_env()).check()


def _token(root: str) -> str:
    request = urllib.request.Request(
        f"{root}/storage/auth/token?storage_type=fal-cdn-v3",
        data=b"{}",
        headers={"Authorization": f"Key {clients.API_KEY}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.loads(response.read())
    return f"{answer['token_type']} {answer['token']}"


def _curl(bench: Bench, files: list[Path], root: str, name: str) -> ChildRun:
    auth = _token(root)
    config = bench.tmp / f"{name}.curlrc"
    lines: list[str] = []
    for path in files:
        if lines:
            lines.append("next")  # the options below are this transfer's own
        lines += [
            f'url = "{root}/files/upload"',
            f'upload-file = "{path}"',
            'request = "POST"',
            f'header = "Authorization: {auth}"',
            'header = "Content-Type: video/mp4"',
            f'header = "X-Fal-File-Name: {path.name}"',
            'output = "/dev/null"',
            "fail",
            "silent",
        ]
    config.write_text("\n".join(lines) + "\n")
    argv = [
        "curl",
        "--silent",
        "--fail",
        "--parallel",
        "--parallel-max",
        str(UPLOAD_CONCURRENCY),
        "--config",
        str(config),
    ]
    return run_child(argv, out_dir=bench.tmp, name=name, timeout=1800).check()


@dataclass(frozen=True, slots=True)
class Window:
    """One client run as the fake saw it, in seconds: spawn to its first upload request (start-up, settings, token,
    preflight), that request to the last answer (the transfer), and that answer to the client's exit (registration,
    records, exit). The fake's clock is ``time.monotonic()``, system-wide on Linux, as is ``ChildRun.started_mono``."""

    child: ChildRun
    first_byte_s: float
    transfer_s: float
    tail_s: float


def _transfer_window(root: str, run: Callable[[], ChildRun]) -> Window:
    """``run()`` split at its transfer as the fake saw it: from the first upload request to the last answer (start-up,
    token, registration and records outside it, for either client alike)."""
    stats_url = f"{root}/_admin/storage/stats"
    # The files of earlier rounds are dropped first (POST /_admin/reset): a full run would otherwise keep every
    # round's copy, ~9 GiB on disk. Loopback: the fake started above.
    urllib.request.urlopen(urllib.request.Request(f"{root}/_admin/reset", data=b"", method="POST"), timeout=10).read()
    urllib.request.urlopen(stats_url + "?reset_window=1", timeout=10).read()
    child = run()
    with urllib.request.urlopen(stats_url, timeout=10) as response:
        window = json.loads(response.read())["window"]
    start, end = window["start"] - child.started_mono, window["end"] - child.started_mono
    return Window(child, start, end - start, child.wall_s - end)


@dataclass(frozen=True, slots=True)
class Compared:
    """The alternating rounds of one set of files: each round's ``Window`` for ingest and for curl."""

    total: int  # bytes of the files
    ours: list[Window]
    theirs: list[Window]

    def mib_per_s(self, seconds: Callable[[Window], float]) -> Callable[[Window], float]:
        """A round's MiB/s over the time ``seconds`` picks from its window."""
        return lambda w: self.total / seconds(w) / MIB

    def ratio(self, seconds: Callable[[Window], float]) -> float:
        """The median over rounds of ingest's MiB/s ÷ curl's."""
        rate = self.mib_per_s(seconds)
        return _median([rate(a) / rate(b) for a, b in zip(self.ours, self.theirs, strict=True)])


def _compare(bench: Bench, root: str, files: list[Path], label: str) -> Compared:
    """ingest and curl upload ``files`` in alternating rounds, each timed end to end and as the fake saw it."""
    total = sum(f.stat().st_size for f in files)
    ours, theirs = [], []
    for round_index in range(bench.profile.rounds):
        name = f"rehost-{label}-{round_index}"
        manifest = _manifest(bench.tmp / f"{name}.jsonl", files)
        run, curl = alternate(
            round_index,
            lambda: _transfer_window(root, lambda: _ingest(bench, manifest, root, f"{name}-ingest")),  # noqa: B023
            lambda: _transfer_window(root, lambda: _curl(bench, files, root, f"{name}-curl")),  # noqa: B023
        )
        ours.append(run)
        theirs.append(curl)
        bench.say(
            f"[rehost] {label} round {round_index}: ingest {total / run.child.wall_s / MIB:.0f} MiB/s, curl "
            f"{total / curl.child.wall_s / MIB:.0f} MiB/s; transfer alone {total / run.transfer_s / MIB:.0f} vs "
            f"{total / curl.transfer_s / MIB:.0f} MiB/s; to the first byte {run.first_byte_s * 1000:.0f} vs "
            f"{curl.first_byte_s * 1000:.0f} ms, after the last answer {run.tail_s * 1000:.0f} vs "
            f"{curl.tail_s * 1000:.0f} ms; ingest peak RSS {run.child.peak_rss_mb:.0f} MB"
        )
    return Compared(total, ours, theirs)


def _row(compared: Compared, setting: str, name: str, figure: Callable[[Window], float], **more: Any) -> Row:
    """A row of ingest's ``figure`` beside curl's, one value a round each."""
    mine, theirs = [figure(w) for w in compared.ours], [figure(w) for w in compared.theirs]
    return Row("rehost", name, setting, ",.0f", Stat.of(mine), Stat.of(theirs), "curl --upload-file", **more)


def _wall(w: Window) -> float:
    return w.child.wall_s


def _transfer(w: Window) -> float:
    return w.transfer_s


def rehost(bench: Bench) -> list[Row]:
    """Rows ``rehost: MiB/s`` end to end and for the transfer alone, the ms before the first upload and after the
    last answer (ingest beside curl each), for many files and for one big one, and ``rehost: peak RSS MB`` (the big
    file's ingest rounds)."""
    p = bench.profile
    compile_product()
    files = _write_files(bench.tmp / "rehost-media", p.rehost_files, p.rehost_file_mb * MIB, prefix="clip")
    big = _write_files(bench.tmp / "rehost-big", 1, p.rehost_big_mb * MIB, prefix="big")
    with fake_storage(bench.tmp) as root:
        many = _compare(bench, root, files, "files")
        one = _compare(bench, root, big, "big")
    rows: list[Row] = []
    for compared, setting, how in (
        (many, f"{p.rehost_files} × {p.rehost_file_mb} MiB, U={UPLOAD_CONCURRENCY}", "local files"),
        (one, f"1 × {p.rehost_big_mb} MiB, U={UPLOAD_CONCURRENCY}", "one big file"),
    ):
        ratio = compared.ratio(_wall)
        how_sent = "ingest: a multipart upload of 10 MiB parts, hashed in order; curl: one POST of the whole file"
        rows += [
            _row(compared, setting, f"MiB/s, {how}", compared.mib_per_s(_wall), ratio=ratio, ratio_of="ingest/curl",
                 target="≥ 0.9× curl", met=ratio >= 0.9, note=how_sent if compared is one else ""),
            _row(compared, setting, f"MiB/s, {how}, transfer alone", compared.mib_per_s(_transfer),
                 ratio=compared.ratio(_transfer), ratio_of="ingest/curl",
                 note="first upload request to last answer, as the fake saw it: start-up excluded for both"),
            _row(compared, setting, f"ms, {how}, spawn to first upload", lambda w: w.first_byte_s * 1000,
                 note="start-up, settings, token, preflight (curl's token is fetched before its clock)"),
            _row(compared, setting, f"ms, {how}, last answer to exit", lambda w: w.tail_s * 1000,
                 note="ingest: the last registration, the records and the exit"),
        ]  # fmt: skip
    peak = max(w.child.peak_rss_mb for w in one.ours)
    rows.append(
        Row(
            "rehost",
            "peak RSS MB, one big file",
            f"{p.rehost_big_mb} MiB, defaults",
            ",.0f",
            Stat.of([peak]),
            target=f"< {MEMORY_GOAL_MB:g} MB at 1 GiB",
            met=peak < MEMORY_GOAL_MB if p.rehost_big_mb >= 1024 else None,
            note=f"the highest of the big file's {len(one.ours)} ingest rounds",
        )
    )
    return rows
