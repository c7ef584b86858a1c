"""A worker SIGKILLed while a large file is going up: the rerun resumes it and leaves exactly one asset per row."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import orjson
import pytest

from ingest.rehost import journal_path
from tests.helpers.processes import fake_server_process, run_worker, start_worker, strict_records
from tests.helpers.rehost import write_file

pytestmark = pytest.mark.slow


def _journal_parts(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(1 for line in path.read_bytes().splitlines() if line.startswith(b'{"t":"part"'))


def test_sigkill_mid_multipart_then_rerun_gives_one_asset_per_row(tmp_path: Path) -> None:
    """Killed after some parts of a 150 MiB file were acknowledged, the rerun completes the same upload (no new
    multipart start), registers every row once, and every asset's url was issued by the storage."""
    media = tmp_path / "media"
    write_file(media / "big.mov", 150 << 20)
    for n in range(3):
        write_file(media / f"small{n}.png", 5000 + n, seed=n)
    manifest = tmp_path / "m.jsonl"
    urls = ["media/big.mov", *(f"media/small{n}.png" for n in range(3))]
    manifest.write_bytes(b"".join(orjson.dumps({"url": url}) + b"\n" for url in urls))
    results = tmp_path / "m.results.jsonl"
    with fake_server_process("none", tmp_path / "logs", extra=["--strict-urls"]) as server:
        storage = server.url.removesuffix("/v1")
        options = ["--storage-url", storage, "--upload-concurrency", "2"]
        worker = start_worker(
            [manifest], results, server.url, log_dir=tmp_path / "logs", extra=[*options, "--bwlimit", "20M"]
        )
        try:
            deadline = time.monotonic() + 60
            while _journal_parts(journal_path(results)) < 3:
                assert worker.proc.poll() is None, worker.stderr()
                assert time.monotonic() < deadline, "no parts journaled within 60 s"
                time.sleep(0.05)
            worker.signal(signal.SIGKILL)
        finally:
            worker.kill()
        code, rerun = run_worker([manifest], results, server.url, log_dir=tmp_path / "logs", extra=options)
        assert code == 0, rerun.stderr()[-3000:]
        assert any(e.get("event") == "rehost.multipart_resumed" for e in rerun.events())
        assets = server.assets()
        stats = orjson.loads(_get(f"{server.admin}/storage/stats"))
    assert len(assets) == 4 and len({a["idempotency_key"] for a in assets}) == 4
    assert stats["multipart_started"] == 1 and stats["completed"] == 1
    succeeded = [r for r in strict_records(results) if r.get("status") == "succeeded"]
    assert sorted(r["item"]["url"] for r in succeeded) == sorted(urls)
    assert all(r["asset"]["url"] == r["rehost"]["url"] for r in succeeded)


def _get(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:
        return bytes(response.read())
