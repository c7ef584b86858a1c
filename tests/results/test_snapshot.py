"""The resume index kept beside the results file (``<results>.idx``): used only while it describes the file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingest.results.index import ResumeIndex, Verdict, load_index
from ingest.results.record import Result, Status
from ingest.results.snapshot import MIN_FOLDED, open_index, save_index, snapshot_path
from ingest.run.resume import load_resume
from tests.helpers.pipeline import Reply, make_config, run, scripted_server
from tests.helpers.records import media_rows, write_jsonl

pytestmark = pytest.mark.anyio

SHA = "ab" * 32


def _line(key: str, status: Status = Status.SUCCEEDED, *, row_fp: int = 0) -> bytes:
    result = Result(key, "m.jsonl", 1, status, {"url": "https://x"}, body_sha256=SHA, row_fp=row_fp)
    return result.to_line()


def _write(path: Path, count: int, *, start: int = 0) -> None:
    with path.open("ab") as file:
        for n in range(start, start + count):
            file.write(_line(f"k{n}", row_fp=n + 1))


def _same(a: ResumeIndex, b: ResumeIndex, keys: int) -> None:
    assert (len(a), a.lines_read, a.covered, a.own_lines) == (len(b), b.lines_read, b.covered, b.own_lines)
    for n in range(keys):
        key = f"k{n}"
        assert a.decide(key, SHA, retry_failed=False) is b.decide(key, SHA, retry_failed=False)
        assert a.has_row(n + 1) == b.has_row(n + 1)


def test_a_saved_index_loads_back_the_same_and_appended_records_are_folded(tmp_path: Path) -> None:
    """What ``open_index`` reads from a snapshot plus the records appended since equals a full read of the file."""
    path = tmp_path / "r.jsonl"
    _write(path, 50)
    save_index(path, load_index(path))
    _write(path, 10, start=50)
    with path.open("ab") as file:
        file.write(_line("k3", Status.FAILED))  # a later failure never undoes a success
    loaded = open_index(path)
    assert loaded.snapshot_lines == 50
    _same(loaded, load_index(path), 60)
    assert loaded.decide("k3", SHA, retry_failed=False) is Verdict.SKIP_DONE


def test_a_results_file_rewritten_in_place_is_read_again_not_trusted(tmp_path: Path) -> None:
    """Same size, other bytes (a success edited into a failure by hand): the snapshot is stale and ignored."""
    path = tmp_path / "r.jsonl"
    _write(path, 100)
    save_index(path, load_index(path))
    data = path.read_bytes()
    edited = data.replace(b'"k50","status":"succeeded"', b'"k50","status":"failed   "')  # far from either end
    assert len(edited) == len(data) and edited != data
    path.write_bytes(edited)
    os.utime(path, ns=(1, 1))
    loaded = open_index(path)
    assert loaded.snapshot_lines == 0  # rebuilt from the file
    assert not loaded.has_row(51) and loaded.decide("k50", SHA, retry_failed=False) is not Verdict.SKIP_DONE


@pytest.mark.parametrize("damage", ["truncate", "flip", "shorter results", "other file"])
def test_a_torn_corrupt_or_foreign_snapshot_is_ignored(tmp_path: Path, damage: str) -> None:
    """A snapshot cut short, with a flipped byte, or of a file that shrank or was replaced: built from the file."""
    path = tmp_path / "r.jsonl"
    _write(path, 40)
    save_index(path, load_index(path))
    snap = snapshot_path(path)
    if damage == "truncate":
        snap.write_bytes(snap.read_bytes()[:-5])
    elif damage == "flip":
        raw = bytearray(snap.read_bytes())
        raw[-10] ^= 0xFF
        snap.write_bytes(bytes(raw))
    elif damage == "shorter results":
        path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:20]))
    else:
        path.rename(tmp_path / "old.jsonl")
        _write(path, 40)
    loaded = open_index(path)
    assert loaded.snapshot_lines == 0
    _same(loaded, load_index(path), 40 if damage != "shorter results" else 20)


def test_load_resume_saves_the_snapshot_after_folding_many_records(tmp_path: Path) -> None:
    """A run that had to fold many records leaves the snapshot; one that folded few does not rewrite it."""
    path = tmp_path / "r.jsonl"
    _write(path, MIN_FOLDED)
    load_resume(path)
    assert snapshot_path(path).exists()
    stamp = snapshot_path(path).stat().st_mtime_ns
    _write(path, 3, start=MIN_FOLDED)
    assert load_resume(path).snapshot_lines == MIN_FOLDED
    assert snapshot_path(path).stat().st_mtime_ns == stamp


async def test_a_run_leaves_a_snapshot_that_covers_its_own_records(tmp_path: Path) -> None:
    """After ``ingest run`` the snapshot covers the whole results file, this run's records included."""
    manifest = write_jsonl(tmp_path / "m.jsonl", media_rows(15))
    results = tmp_path / "m.results.jsonl"
    async with scripted_server(lambda hit: Reply(201)) as server:
        await run(make_config([manifest], results, server.url))
        loaded = open_index(results)
        assert loaded.covered == results.stat().st_size and loaded.snapshot_lines == loaded.lines_read
        assert len(loaded) == 15 and loaded.rows is not None and len(loaded.rows) == 15
        again = await run(make_config([manifest], results, server.url))
        assert len(server.hits) == 15
    assert again.stats.skipped_done == 15


@pytest.mark.anyio
async def test_a_rerun_that_sends_nothing_leaves_the_snapshot_as_it_was(tmp_path: Path) -> None:
    """All a rerun with nothing to send appends is its two run records: the snapshot is not written again for them
    (25 MB at 1M done rows). The next run loads it and folds the run records past it; a run with new rows saves."""
    manifest = write_jsonl(tmp_path / "m.jsonl", media_rows(15))
    results = tmp_path / "m.results.jsonl"
    async with scripted_server(lambda hit: Reply(201)) as server:
        await run(make_config([manifest], results, server.url))
        await run(make_config([manifest], results, server.url))  # finds the manifest's block finished: saved
        written = snapshot_path(results).stat()
        for _ in range(2):
            again = await run(make_config([manifest], results, server.url))
            assert again.stats.skipped_done == 15 and len(server.hits) == 15
        kept = snapshot_path(results).stat()
        assert (kept.st_ino, kept.st_mtime_ns, kept.st_size) == (written.st_ino, written.st_mtime_ns, written.st_size)
        loaded = open_index(results)
        assert loaded.covered == results.stat().st_size and len(loaded) == 15 and len(loaded.history.started) == 4
        write_jsonl(manifest, [*media_rows(15), *media_rows(1, prefix="new")])
        await run(make_config([manifest], results, server.url))
        assert len(server.hits) == 16 and snapshot_path(results).stat().st_mtime_ns != written.st_mtime_ns
        assert len(open_index(results)) == 16
