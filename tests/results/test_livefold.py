"""A run folds the records it writes as it writes them (``ingest.results.livefold``), so that its end saves the resume
index without reading the file back: the index it saves is exactly what a full read of the file gives."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from ingest.manifest import skip
from ingest.results import livefold
from ingest.results.index import ResumeIndex, Verdict, load_index
from ingest.results.snapshot import open_index, snapshot_path
from ingest.run import resume
from tests.helpers.pipeline import Hit, Reply, make_config, run, scripted_server
from tests.helpers.records import media_rows, write_csv, write_jsonl

pytestmark = pytest.mark.anyio

SHA = "cd" * 32


def _entries(index: ResumeIndex) -> tuple[dict[int, int], set[int]]:
    fps, values = index.table.arrays()
    table = {fp: value for fp, value in zip(fps, values, strict=True) if fp}
    rows = {fp for fp in index.rows.arrays()[0] if fp} if index.rows is not None else set()
    return table, rows


def _assert_same(saved: ResumeIndex, read: ResumeIndex) -> None:
    """Every key's state and body fingerprint, every done row, every line count and run record."""
    assert _entries(saved) == _entries(read)
    assert (saved.lines_read, saved.own_lines, saved.covered, saved.unreadable_count) == (
        read.lines_read,
        read.own_lines,
        read.covered,
        read.unreadable_count,
    )
    assert (saved.history.started, saved.history.ended) == (read.history.started, read.history.ended)


def _script(hit: Hit) -> Reply:
    url = hit.body["url"]
    if "/bad" in url:
        return Reply(422)  # a permanent failure
    if "/flaky" in url:
        return Reply(400 if hit.attempt == 1 else 201)
    return Reply(201)


def _manifest(path: Path, *, extra: int = 0) -> Path:
    rows: list[dict[str, object] | str] = [
        *media_rows(20 + extra),
        *media_rows(3, prefix="bad"),
        *media_rows(2),  # duplicates of the first two rows
        {"url": "not a url", "type": "image"},  # invalid
        "{broken json",
    ]
    return write_jsonl(path, rows)


async def test_a_run_saves_exactly_the_index_a_full_read_of_its_file_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the end-of-run read-back off (``TAIL_FOLDED_ALWAYS = 0``, as for a big run), the snapshot is still
    written from what was folded live, and equals ``load_index`` of the file: successes, permanent failures, rows,
    invalid and duplicate records, both runs' run records, over a file an earlier run began."""
    monkeypatch.setattr(resume, "TAIL_FOLDED_ALWAYS", 0)
    manifest = _manifest(tmp_path / "m.jsonl")
    results = tmp_path / "m.results.jsonl"
    async with scripted_server(_script) as server:
        await run(make_config([manifest], results, server.url))
        first = open_index(results)
        assert first.snapshot_lines == first.lines_read and first.covered == results.stat().st_size
        _manifest(manifest, extra=15)  # 15 new rows: the second run appends to a file with a snapshot
        await run(make_config([manifest], results, server.url, retry_failed=True))
        sent = len(server.hits)
    saved = open_index(results)
    assert saved.snapshot_lines == saved.lines_read  # nothing left to fold past the snapshot
    assert saved.covered == results.stat().st_size
    _assert_same(saved, load_index(results))
    assert len(saved.history.started) == 2 and len(saved.history.ended) == 2
    assert sent == 20 + 3 + 15 + 3  # the failed rows again (--retry-failed), nothing else twice


async def test_a_record_appended_by_someone_else_drops_the_live_index_and_the_file_decides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line the sink did not write (another writer ignoring the lock) makes the file differ from what was folded:
    the live index is dropped, and the end of the run reads the file back as before: the foreign record counts."""
    manifest = _manifest(tmp_path / "m.jsonl")
    results = tmp_path / "m.results.jsonl"
    foreign = b'{"key":"foreign","status":"succeeded","body_sha256":"' + SHA.encode() + b'","error":null}\n'

    def script(hit: Hit) -> Reply:
        if hit.key == first_key and hit.attempt == 1:
            with results.open("ab") as file:
                file.write(foreign)
        return _script(hit)

    first_key = ""
    with capture_logs() as logs:
        async with scripted_server(script) as server:
            config = make_config([manifest], results, server.url)
            first_key = config.keys.derive(media_rows(1)[0])
            await run(config)
    dropped = [entry for entry in logs if entry["event"] == "resume.fold_dropped"]
    assert len(dropped) == 1 and "were folded" in dropped[0]["reason"]
    saved = open_index(results)
    _assert_same(saved, load_index(results))
    assert saved.decide("foreign", SHA, retry_failed=False) is Verdict.SKIP_DONE


async def test_more_records_than_max_rows_drop_the_live_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ``MAX_ROWS`` records the live tables are given up (memory); a manifest with more unsettled rows than that
    does not start them at all. Either way the run's records are all there for the next run to fold."""
    monkeypatch.setattr(resume, "TAIL_FOLDED_ALWAYS", 0)
    monkeypatch.setattr(livefold, "MAX_ROWS", 27)  # the manifest's rows: started; its records and run records: more
    manifest = _manifest(tmp_path / "m.jsonl")
    results = tmp_path / "m.results.jsonl"
    with capture_logs() as logs:
        async with scripted_server(_script) as server:
            await run(make_config([manifest], results, server.url))
            assert not snapshot_path(results).exists()  # nothing folded at the end: the next run folds it all
            assert resume.live_fold(results, ResumeIndex(), total=28) is None
            await run(make_config([manifest], results, server.url))
            assert len(server.hits) == 23
    assert any(entry["event"] == "resume.fold_dropped" for entry in logs)
    _assert_same(open_index(results), load_index(results))


def test_absorb_lets_later_records_win_but_never_undoes_a_success() -> None:
    """``ResumeIndex.absorb``: the same rules as folding the later lines one by one."""
    earlier, later = ResumeIndex(), ResumeIndex()
    earlier.put("done", "succeeded", SHA, False)
    earlier.put("failed", "failed", SHA, False)
    earlier.put("retry", "failed", SHA, True)
    later.put("done", "failed", SHA, False)  # a failure after a success: the success stays
    later.put("failed", "succeeded", SHA, False)
    later.put("retry", "failed", SHA, False)  # a later failure replaces an earlier one
    later.put("new", "succeeded", SHA, False)
    later.add_row(7)
    earlier.absorb(later)
    decide = {key: earlier.decide(key, SHA, retry_failed=False) for key in ("done", "failed", "retry", "new")}
    assert decide == {
        "done": Verdict.SKIP_DONE,
        "failed": Verdict.SKIP_DONE,
        "retry": Verdict.SKIP_FAILED,
        "new": Verdict.SKIP_DONE,
    }
    assert earlier.has_row(7) and len(earlier) == 4


def test_absorb_into_a_fresh_index_takes_the_later_tables() -> None:
    fresh, later = ResumeIndex(), ResumeIndex()
    later.put("a", "failed", SHA, True)
    later.add_row(3)
    fresh.absorb(later)
    assert fresh.decide("a", SHA, retry_failed=False) is Verdict.SEND and "a" in fresh and fresh.has_row(3)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
async def test_a_run_records_the_blocks_it_finished_so_the_first_rerun_skips_them_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """The manifest blocks whose rows all succeeded are in the snapshot the run saves: the first rerun finds no
    finished block the run did not record. A block with a failed row, and the CSV header's block, are not finished."""
    monkeypatch.setattr(skip, "FIRST_BLOCK", 1024)
    monkeypatch.setattr(skip, "BLOCK", 1024)
    rows = media_rows(200)
    rows[120] = media_rows(1, prefix="bad")[0]
    manifest = tmp_path / f"m.{fmt}"
    write_csv(manifest, rows) if fmt == "csv" else write_jsonl(manifest, rows)
    results = tmp_path / "m.results.jsonl"
    async with scripted_server(_script) as server:
        await run(make_config([manifest], results, server.url))
        finished = dict(open_index(results).blocks)
        size = manifest.stat().st_size
        assert len(finished) >= size // 1024 - 2  # all but the header's and the failed row's (and a short last one)
        assert sum(finished.values()) < 199
        again = await run(make_config([manifest], results, server.url))
        assert len(server.hits) == 200
    assert again.stats.skipped_done == 199 and again.stats.skipped_failed == 1
    assert open_index(results).blocks == finished  # the rerun found no finished block the run had not recorded
