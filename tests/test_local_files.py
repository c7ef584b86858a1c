"""Every local path mistake is refused, and a local I/O failure is one clear line (issue 9, findings 5, 6, 7, 9),
through the real CLI against a hostile server on loopback: outputs that are inputs (exit 2, nothing sent), one
writer per resolved file and per results family, torn and overlong lines never fatal, a results path that is a
directory or a device (exit 2), and a disk that fills mid-run (exit 5, the summary printed, a rerun completes).
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.helpers.hostile_server import (
    Hit,
    Reply,
    asset_reply,
    cli_env,
    hostile_server,
    ingest,
    records,
    run_args,
    write_manifest,
)


def test_a_torn_line_ending_in_a_newline_never_crashes_a_run_or_a_dry_run(tmp_path: Path) -> None:
    """A torn record followed by an editor's newline is an unreadable line, counted and skipped: the run and the
    dry run go on, and the item is sent."""
    manifest, results = write_manifest(tmp_path / "m.jsonl"), tmp_path / "r.jsonl"
    results.write_bytes(b'{"key":"a","status":"succeeded","body_sha256":"6ab0\n')
    with hostile_server(lambda hit: asset_reply(hit.body)) as server:
        dry = ingest(*run_args(manifest, results, server.url, "--dry-run"))
        done = ingest(*run_args(manifest, results, server.url))
        assert len(server.hits) == 3
    assert dry.code == 0, dry.stderr[-3000:]
    assert done.code == 0, done.stderr[-3000:]
    assert done.events("resume.unreadable_lines")[0]["count"] == 1


def test_an_overlong_line_in_the_results_file_is_skipped_in_bounded_memory(tmp_path: Path) -> None:
    """A 40 MB line without structure is one unreadable line; the records after it still count."""
    manifest, results = write_manifest(tmp_path / "m.jsonl"), tmp_path / "r.jsonl"
    with hostile_server(lambda hit: asset_reply(hit.body)) as server:
        assert ingest(*run_args(manifest, results, server.url)).code == 0
        good = results.read_bytes()
        results.write_bytes(b"x" * (40 << 20) + b"\n" + good)
        again = ingest(*run_args(manifest, results, server.url))
        assert len(server.hits) == 3  # nothing resent
    assert again.code == 0, again.stderr[-3000:]


@pytest.mark.parametrize("how", ["same path", "symlink", "hard link"])
def test_results_that_is_the_manifest_is_refused_before_anything_is_sent(tmp_path: Path, how: str) -> None:
    """--results naming the manifest (itself, a symlink to it, a hard link) is exit 2, the manifest untouched."""
    manifest = write_manifest(tmp_path / "m.jsonl")
    before = manifest.read_bytes()
    results = tmp_path / "r.jsonl"
    if how == "same path":
        results = manifest
    elif how == "symlink":
        results.symlink_to(manifest)
    else:
        os.link(manifest, results)
    with hostile_server(lambda hit: asset_reply(hit.body)) as server:
        done = ingest(*run_args(manifest, results, server.url), timeout=30)
        assert server.hits == []
    assert done.code == 2, done.stderr[-3000:]
    assert "same file as manifest" in done.stderr
    assert manifest.read_bytes() == before


@pytest.mark.parametrize("target", ["results", "manifest", "lock"])
def test_metrics_textfile_that_is_another_file_of_the_run_is_refused(tmp_path: Path, target: str) -> None:
    """--metrics-textfile equal to --results, a manifest or the lock file is exit 2: no record is overwritten."""
    manifest, results = write_manifest(tmp_path / "m.jsonl"), tmp_path / "r.jsonl"
    with hostile_server(lambda hit: asset_reply(hit.body)) as server:
        assert ingest(*run_args(manifest, results, server.url)).code == 0
        before = results.read_bytes()
        metrics = {"results": results, "manifest": manifest, "lock": tmp_path / "r.jsonl.lock"}[target]
        done = ingest(*run_args(manifest, results, server.url, "--metrics-textfile", metrics))
    assert done.code == 2, done.stderr[-3000:]
    assert "--metrics-textfile" in done.stderr
    assert results.read_bytes() == before


def _start(args: list[str | Path]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "ingest", *map(str, args)],
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd="/",
        start_new_session=True,  # its own process group: killing it takes --processes' workers along
    )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill ``proc`` and every process it started (the workers of ``--processes``), and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, "the first run ended early"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.parametrize("layout", ["symlink", "processes beside plain", "shard beside plain"])
def test_one_writer_per_resolved_file_and_per_family(tmp_path: Path, layout: str) -> None:
    """A second run on a symlink to a live run's results, or a plain run beside a --processes or --shard run of
    the same family, is refused (exit 2) while the first lives."""
    manifest, results = write_manifest(tmp_path / "m.jsonl", 6), tmp_path / "fam.jsonl"
    link = tmp_path / "link.jsonl"
    link.symlink_to(results)
    with hostile_server(lambda hit: Reply(201, asset_reply(hit.body).body, delay=20)) as server:
        if layout == "processes beside plain":
            first = _start(run_args(manifest, results, server.url, "--processes", "2"))
            _wait_for(tmp_path / "fam.shard-1-of-2.jsonl.lock", first)
            second = run_args(manifest, results, server.url)
        elif layout == "shard beside plain":
            shard = tmp_path / "fam.shard-0-of-2.jsonl"
            first = _start(run_args(manifest, shard, server.url, "--shard", "0/2"))
            _wait_for(tmp_path / "fam.shard-0-of-2.jsonl.lock", first)
            second = run_args(manifest, results, server.url)
        else:
            first = _start(run_args(manifest, results, server.url))
            _wait_for(tmp_path / "fam.jsonl.lock", first)
            second = run_args(manifest, link, server.url)
        try:
            done = ingest(*second, timeout=30)
        finally:
            _kill_group(first)
    assert done.code == 2, done.stderr[-3000:]
    assert "in use by another ingest run" in done.stderr


@pytest.mark.parametrize("kind", ["directory", "/dev/full symlink"])
def test_a_results_path_that_is_not_a_file_is_one_line_and_exit_2(tmp_path: Path, kind: str) -> None:
    """A results path that is a directory, or a symlink to /dev/full, is refused by name at once (no traceback,
    no unbounded read)."""
    manifest, results = write_manifest(tmp_path / "m.jsonl"), tmp_path / "r.jsonl"
    if kind == "directory":
        results.mkdir()
    else:
        results.symlink_to("/dev/full")
    done = ingest(*run_args(manifest, results, "http://127.0.0.1:9/v1"), timeout=30)
    assert done.code == 2, done.stderr[-3000:]
    assert str(results) in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (6000, 6000))  # the results file fills after a few records


def test_a_disk_that_fills_mid_run_is_exit_5_with_the_summary_then_a_rerun_completes(tmp_path: Path) -> None:
    """A results write that fails (here: RLIMIT_FSIZE, like a full disk) stops the run: one line naming the file,
    the summary, exit 5, the records written before it intact; a rerun sends only what was not recorded."""
    manifest, results = write_manifest(tmp_path / "m.jsonl", 40), tmp_path / "r.jsonl"
    with hostile_server(lambda hit: asset_reply(hit.body)) as server:
        full = subprocess.run(
            [sys.executable, "-m", "ingest", *map(str, run_args(manifest, results, server.url))],
            env=cli_env(), capture_output=True, timeout=60, preexec_fn=_limit_file_size, cwd="/",
        )  # fmt: skip
        stderr = full.stderr.decode()
        written = [r for r in _complete_records(results)]
        rerun = ingest(*run_args(manifest, results, server.url))
        by_key = Counter(hit.key for hit in server.hits)
    assert full.returncode == 5, stderr[-3000:]
    assert "Traceback" not in stderr
    assert f"cannot write the results file {results}" in stderr
    assert "ingest: " in stderr and "succeeded" in stderr  # the summary
    assert rerun.code == 0, rerun.stderr[-3000:]
    assert {r["status"] for r in records(results)} == {"succeeded"}
    assert len({r["key"] for r in records(results)}) == 40
    assert all(by_key[r["key"]] == 1 for r in written)  # what was recorded was not sent again


def _complete_records(path: Path) -> list[dict[str, Any]]:
    """The item records of ``path`` up to its last newline (a torn tail and run records left out)."""
    import orjson

    every = [orjson.loads(line) for line in path.read_bytes().split(b"\n")[:-1] if line.strip()]
    return [record for record in every if "record" not in record]


def test_a_manifest_rewritten_while_it_is_read_stops_being_read_with_a_warning(tmp_path: Path) -> None:
    """A manifest rewritten in place under the reader (another size, another mtime) is not read further: one
    ``manifest.changed`` warning, no garbage row, and every record still names its row's true line."""
    manifest, results = (
        write_manifest(tmp_path / "m.jsonl", 400, prefix="long-prefix-for-offsets"),
        tmp_path / "r.jsonl",
    )
    original = manifest.read_bytes().splitlines()
    rewritten: list[bool] = []

    def answer(hit: Hit) -> Reply:
        if not rewritten:
            rewritten.append(True)
            with manifest.open("r+b") as file:  # in place: same inode, the reader's offset now points elsewhere
                file.truncate(0)
                file.write(b"".join(b'{"url":"https://v3.fal.media/n/%d.png"}\n' % i for i in range(2000)))
        return asset_reply(hit.body)

    with hostile_server(answer) as server:
        done = ingest(*run_args(manifest, results, server.url, "--concurrency", "1"))
    assert done.events("manifest.changed"), done.stderr[-3000:]
    written = records(results)
    assert written and {r["status"] for r in written} == {"succeeded"}
    for record in written:
        assert orjson.loads(original[record["line"] - 1])["url"] == record["item"]["url"]
    assert len(written) < 400
