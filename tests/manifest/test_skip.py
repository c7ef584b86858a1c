"""Skipping finished rows by their line's bytes, before any decoding (issue 13): what is skipped, and what never is."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.admission.keys import KeyDeriver
from ingest.commands.validate import plan
from ingest.keytable import fingerprint_bytes
from ingest.manifest import skip as skip_module
from ingest.manifest.lines import Line, physical_lines
from ingest.manifest.skip import LineSkip
from ingest.manifest.source import ManifestOptions, ManifestSource
from ingest.results.index import load_index
from ingest.results.snapshot import open_index
from tests.helpers.pipeline import Reply, make_config, run, scripted_server
from tests.helpers.records import media_rows, read_results, write_csv, write_jsonl

pytestmark = pytest.mark.anyio

SALT = b"salt"


def _lines(*texts: bytes) -> Iterator[Line]:
    return iter(enumerate(texts, start=1))


def test_jsonl_lines_whose_fingerprint_is_done_are_dropped_and_counted() -> None:
    """A JSONL line whose salted fingerprint is done never reaches the reader; the others do, with their print."""
    done = {fingerprint_bytes(SALT + b"\njsonl" + b'{"url": "a"}')}
    skip = LineSkip(SALT, done.__contains__)
    kept = list(skip.filter(_lines(b'{"url": "a"}\n', b'{"url": "b"}\r\n', b"\n"), csv=False, context=b"jsonl"))
    assert [number for number, _ in kept] == [2, 3]
    assert skip.take_skipped() == 1 and skip.take_skipped() == 0
    assert skip.fps == {2: fingerprint_bytes(SALT + b"\njsonl" + b'{"url": "b"}')}  # the blank line gets no fingerprint


def test_csv_header_and_multi_line_records_are_never_skipped() -> None:
    """In CSV the header is salt, not a row, and a quoted field spanning lines keeps every one of its lines."""
    header = b"url,prompt"
    salt = SALT + b"\ncsv" + b"\n" + header
    row, inside = b"u1,plain", b'x,"no'
    done = {fingerprint_bytes(salt + row), fingerprint_bytes(salt + inside), fingerprint_bytes(salt + b'pe"')}
    skip = LineSkip(SALT, done.__contains__)
    kept = list(
        skip.filter(_lines(header + b"\n", row + b"\n", b'u2,"multi\n', b'pe"\n', b"u3,z\n"), csv=True, context=b"csv")
    )
    assert [number for number, _ in kept] == [1, 3, 4, 5]
    assert skip.skipped == 1


async def test_a_rerun_skips_finished_lines_unread_and_still_catches_an_edited_one(tmp_path: Path) -> None:
    """After a run, a rerun drops every unchanged line by its fingerprint; an edited line is read, keyed and reported
    as changed since ingested, exactly as before."""
    manifest = write_jsonl(tmp_path / "m.jsonl", media_rows(20))
    results = tmp_path / "results.jsonl"
    async with scripted_server(lambda hit: Reply(201)) as server:
        first = await run(make_config([manifest], results, server.url))
        assert first.exit_code == 0
        assert all(len(record["row_fp"]) == 16 for record in read_results(results))
        assert len(load_index(results).rows or ()) == 20
        edited = media_rows(20)
        edited[3]["prompt"] = "edited"
        write_jsonl(manifest, edited)
        second = await run(make_config([manifest], results, server.url))
        assert len(server.hits) == 20  # nothing sent again
    assert second.stats.skipped_done == 19 and second.stats.rows == 20
    changed = [r for r in read_results(results) if r["status"] == "invalid"]
    assert len(changed) == 1 and changed[0]["error"]["type"] == "changed_since_ingested"


async def test_another_key_namespace_reads_every_line_again(tmp_path: Path) -> None:
    """The same bytes under other key settings are other rows: nothing is skipped by fingerprint."""
    manifest = write_csv(tmp_path / "m.csv", media_rows(5))
    results = tmp_path / "results.jsonl"
    async with scripted_server(lambda hit: Reply(201)) as server:
        await run(make_config([manifest], results, server.url))
        again = await run(make_config([manifest], results, server.url, keys=KeyDeriver(key_namespace="other")))
        assert len(server.hits) == 10
    assert again.stats.skipped_done == 0


async def test_dry_run_counts_finished_lines_as_done_without_reading_them(tmp_path: Path) -> None:
    """``plan`` (validate / --dry-run) over a results file counts fingerprinted lines as already done."""
    manifest = write_jsonl(tmp_path / "m.jsonl", media_rows(12))
    results = tmp_path / "results.jsonl"
    async with scripted_server(lambda hit: Reply(201)) as server:
        await run(make_config([manifest], results, server.url))
    write_jsonl(manifest, media_rows(15))  # three new rows after the twelve done ones
    source = ManifestSource.open(str(manifest))
    counted = plan([source], ManifestOptions(), KeyDeriver(), index=load_index(results))
    assert counted.rows == 15
    assert counted.counts["skip_done"] == 12 and counted.counts["send"] == 3


def _read(skip: LineSkip, data: bytes, *, csv: bool = False, max_line_bytes: int = 1 << 20) -> list[Line]:
    return list(skip.read(io.BytesIO(data), csv=csv, context=b"c", max_line_bytes=max_line_bytes, name="m"))


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of a few lines, so that a small manifest has many."""
    monkeypatch.setattr(skip_module, "FIRST_BLOCK", 40)
    monkeypatch.setattr(skip_module, "BLOCK", 100)


@pytest.mark.parametrize("csv", [False, True])
@pytest.mark.parametrize(
    "data",
    [
        b'{"a": 1}\n\n{"b": 2}\r\n' * 30 + b'{"tail": "no newline"}',
        b"url,prompt\n" + b'u,"two\nlines"\n' * 9 + b"x" * 300 + b"\n" + b"u,p\r\n" * 20 + b"lone\rcr\n" + b"y" * 250,
        b"h\n" + b"z" * 1000 + b"\r\n" + b"short\n",
    ],
)
@pytest.mark.usefixtures("small_blocks")
def test_reading_in_blocks_yields_what_line_by_line_reading_does(data: bytes, csv: bool) -> None:
    """Over-long lines, blank ones, CR/CRLF/lone CR, quoted fields across lines, a missing last newline: the same
    numbered lines, the same fingerprints and the same skips as ``physical_lines`` then ``filter``."""
    lines = list(physical_lines(io.BytesIO(data), max_line_bytes=200, name="m"))
    done = {fingerprint_bytes(SALT + b"\nc" + b'{"b": 2}'), fingerprint_bytes(SALT + b"\nc\nurl,prompt" + b"u,p")}
    by_line = LineSkip(SALT, done.__contains__)
    expected = list(by_line.filter(iter(lines), csv=csv, context=b"c"))
    by_block = LineSkip(SALT, done.__contains__, {})
    assert _read(by_block, data, csv=csv, max_line_bytes=200) == expected
    assert (by_block.skipped, by_block.fps) == (by_line.skipped, by_line.fps)


@pytest.mark.usefixtures("small_blocks")
def test_a_finished_block_is_skipped_whole_and_an_edited_one_read_line_by_line() -> None:
    """Once every row of a block was skipped as done, the next read skips the block unsplit; a block with one edited
    byte is read line by line, and only the edited line reaches the reader."""
    rows = [b'{"url": "https://x/%d"}' % n for n in range(40)]
    data = b"".join(row + b"\n" for row in rows)
    done_fps = {fingerprint_bytes(SALT + b"\nc" + row) for row in rows}
    calls = []

    def done(fp: int) -> bool:
        calls.append(fp)
        return fp in done_fps

    blocks: dict[bytes, int] = {}
    first = LineSkip(SALT, done, blocks)
    assert _read(first, data) == [] and first.skipped == 40
    assert len(blocks) > 3 and sum(blocks.values()) == 40
    calls.clear()
    second = LineSkip(SALT, done, blocks)
    assert _read(second, data) == [] and second.skipped == 40
    assert calls == []  # not one line fingerprinted
    edited = data.replace(b"https://x/17", b"https://x/71")
    third = LineSkip(SALT, done, blocks)
    assert [number for number, _ in _read(third, edited)] == [18]
    assert third.skipped == 39 and 0 < len(calls) < 40
    other_salt = LineSkip(b"other", done, blocks)
    assert len(_read(other_salt, data)) == 40  # the same bytes under other settings: nothing is done


async def test_a_rerun_skips_finished_blocks_and_still_catches_an_edited_row(
    tmp_path: Path, small_blocks: None
) -> None:
    """Run, rerun (which finds every block finished and keeps them in the snapshot), then edit one row: the third
    run reads that row's block, reports the row as changed since ingested and sends nothing."""
    manifest = write_jsonl(tmp_path / "m.jsonl", media_rows(30))
    results = tmp_path / "results.jsonl"
    async with scripted_server(lambda hit: Reply(201)) as server:
        await run(make_config([manifest], results, server.url))
        second = await run(make_config([manifest], results, server.url))
        assert second.stats.skipped_done == 30
        assert open_index(results).blocks  # the finished blocks were saved with the index
        edited = media_rows(30)
        edited[12]["prompt"] = "edited"
        write_jsonl(manifest, edited)
        third = await run(make_config([manifest], results, server.url))
        assert len(server.hits) == 30
    assert third.stats.skipped_done == 29 and third.stats.rows == 30
    changed = [r for r in read_results(results) if r["status"] == "invalid"]
    assert len(changed) == 1 and changed[0]["line"] == 13 and changed[0]["error"]["type"] == "changed_since_ingested"
