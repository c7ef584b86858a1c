"""Progress by bytes: the rehost stage's tally moves while a file goes up, counts retried bytes once towards the work,
and the run's figures turn it into bytes left and an ETA by bytes."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from ingest.fakeserver import FakeServerConfig, StorageConfig, running_fake_server
from ingest.rehost import RehostOptions, SourceError
from ingest.run.rehosting import RehostFigures
from ingest.run.stats import RunStats
from tests.helpers.rehost import rehoster_for, write_file

MiB = 1 << 20


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_bytes_left_fall_while_a_file_goes_up(tmp_path: Path) -> None:
    """Under --bwlimit a 3 MiB file takes a while: the tally shows part of it sent and the rest left before it ends."""
    size = 3 * MiB
    write_file(tmp_path / "a.bin", size)
    samples: list[tuple[int, int]] = []
    async with (
        running_fake_server() as server,
        rehoster_for(server, tmp_path / "j.jsonl", bwlimit=4 * MiB) as (rehoster, _),
    ):
        tally = rehoster.tally
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                while True:
                    samples.append((tally.bytes_left, tally.bytes_sent))
                    await anyio.sleep(0.02)

            tg.start_soon(watch)
            await rehoster.rehost("k", "a.bin", tmp_path)
            tg.cancel_scope.cancel()
    assert any(0 < left < size for left, _ in samples), samples[:: max(1, len(samples) // 10)]
    assert all(left + sent <= size for left, sent in samples)  # no bytes counted twice
    assert (tally.sources, tally.bytes_seen, tally.bytes_left, tally.bytes_sent) == (1, size, 0, size)


@pytest.mark.anyio
async def test_resent_parts_count_on_the_wire_but_once_towards_the_work(tmp_path: Path) -> None:
    """Dropped parts are sent again: bytes sent exceed the file, bytes left still end at zero, never below."""
    size = 12 * MiB + 5
    write_file(tmp_path / "v.mp4", size)
    config = FakeServerConfig(storage=StorageConfig(p_drop_part=0.3, seed=4))
    options = RehostOptions(multipart_threshold=MiB)
    async with (
        running_fake_server(config) as server,
        rehoster_for(server, tmp_path / "j.jsonl", options=options) as (rehoster, _),
    ):
        await rehoster.rehost("k", "v.mp4", tmp_path)
        assert server.storage is not None and server.storage.ledger.parts_dropped > 0
    tally = rehoster.tally
    assert tally.bytes_seen == size and tally.bytes_left == 0
    assert tally.bytes_sent >= size


@pytest.mark.anyio
async def test_reused_and_unreadable_sources_leave_nothing_ahead(tmp_path: Path) -> None:
    """A source reused from the journal and one that cannot be read are looked at, and add no bytes left."""
    write_file(tmp_path / "a.png", 5000)
    async with running_fake_server() as server:
        async with rehoster_for(server, tmp_path / "j.jsonl") as (rehoster, _):
            await rehoster.rehost("k", "a.png", tmp_path)
        async with rehoster_for(server, tmp_path / "j.jsonl") as (rehoster, _):
            await rehoster.rehost("k", "a.png", tmp_path)
            with pytest.raises(SourceError):
                await rehoster.rehost("gone", "missing.png", tmp_path)
    tally = rehoster.tally
    assert (tally.sources, tally.bytes_seen, tally.bytes_left, tally.bytes_sent) == (2, 0, 0, 0)


@pytest.mark.anyio
async def test_the_figures_estimate_the_sources_not_looked_at_yet(tmp_path: Path) -> None:
    """Bytes left add, for each item not looked at yet, the mean size so far, and say so until none is left; a run
    with nothing to rehost has no bytes figures."""
    write_file(tmp_path / "a.bin", MiB)
    async with running_fake_server() as server, rehoster_for(server, tmp_path / "j.jsonl") as (rehoster, _):
        figures = RehostFigures()
        assert figures(rehoster, RunStats(total=8, rows=4, queued=4)) == {}  # only fal urls so far: no bytes line
        stats = RunStats(total=8, rows=4, queued=3, to_rehost=2)  # half the rows read rehost: 2 queued, 2 to come
        assert figures(rehoster, stats)["bytes_left"] is None  # nothing looked at: no size to go by
        await rehoster.rehost("k", "a.bin", tmp_path)
        estimate = figures(rehoster, stats)
        assert estimate["bytes_sent"] == MiB and estimate["rehosted"] == 1
        assert estimate["bytes_left"] == 3 * MiB and estimate["bytes_left_exact"] is False  # 1 queued + 4 × ½ to come
        done = figures(rehoster, RunStats(total=4, rows=4, queued=1, to_rehost=1))
        assert done["bytes_left"] == 0 and done["bytes_left_exact"] is True
    assert figures(None, stats) == {}
