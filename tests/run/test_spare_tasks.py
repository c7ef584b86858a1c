"""Spare consumer tasks (``ingest.run.pipeline``, ``Consumer(spare=…)``): a run starts one consumer task per
request slot, and an item about to wait out a ``Retry-After`` or a backoff without its slot first asks for a spare
task, so that the slot it gives back is used meanwhile; there are at most ``ITEMS_PER_SLOT`` tasks per slot.

Both tests run the real pipeline against a scripted spy server on 127.0.0.1 and judge by what the server saw and
by the consumer tasks alive on the loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import anyio
import pytest

from ingest.run.pipeline import ITEMS_PER_SLOT
from ingest.upload.retry import RetryPolicy
from tests.helpers.pipeline import Hit, Reply, error_body, make_config, run, scripted_server
from tests.helpers.records import media_rows, read_results, write_jsonl

pytestmark = pytest.mark.anyio


def runs(task: asyncio.Task[object], qualname: str) -> bool:
    """Whether the suspended ``task`` is inside a coroutine named ``qualname`` (anyio wraps a task's coroutine in
    its own, so the chain of awaited coroutines is walked)."""
    coro: Any = task.get_coro()
    while coro is not None:
        if getattr(coro, "__qualname__", None) == qualname:
            return True
        coro = getattr(coro, "cr_await", None)
    return False


def consumer_tasks() -> int:
    """The consumer tasks alive on the running loop now (each runs ``Consumer.run``)."""
    return sum(1 for task in asyncio.all_tasks() if runs(task, "Consumer.run"))


async def test_an_item_waiting_out_a_retry_after_does_not_hold_the_only_slot(tmp_path: Path) -> None:
    """With one slot, a first item answered 429 ``Retry-After: 1`` waits its second without the slot: the second
    item is sent and answered within that second, before the first item's retry, and the slot still caps the
    requests in flight at one."""
    rows = media_rows(2)
    manifest = write_jsonl(tmp_path / "m.jsonl", rows)
    throttled = rows[0]["url"]

    def script(hit: Hit) -> Reply:
        if hit.body["url"] == throttled and hit.attempt == 1:
            return Reply(429, error_body(429, "slow down", "rate_limited"), headers={"Retry-After": "1"})
        return Reply(201)

    async with scripted_server(script) as server:
        report = await run(make_config([manifest], tmp_path / "results.jsonl", server.url, concurrency=1))

    assert report.exit_code == 0
    assert {record["status"] for record in read_results(tmp_path / "results.jsonl")} == {"succeeded"}
    order = [(hit.body["url"], hit.attempt) for hit in server.hits]
    assert order == [(throttled, 1), (rows[1]["url"], 1), (throttled, 2)], order
    first, second, retry = server.hits
    assert first.answered is not None and second.answered is not None
    assert retry.arrived - first.answered >= 0.95  # the Retry-After was honoured
    assert second.answered < retry.arrived  # the second item was done while the first one waited
    assert server.peak_in_flight == 1


async def test_spare_tasks_stay_within_items_per_slot_while_many_items_wait(tmp_path: Path) -> None:
    """With two slots and 24 items that each wait about a second after a 503, the run grows to exactly
    ``ITEMS_PER_SLOT`` consumer tasks per slot and no more: 8 items are taken and sent before the first retry
    (one per task), never more consumer tasks are alive at once, and the slots still cap the requests in flight."""
    slots, items = 2, 24
    cap = slots * ITEMS_PER_SLOT
    manifest = write_jsonl(tmp_path / "m.jsonl", media_rows(items))
    policy = RetryPolicy(backoff_initial=1.0, backoff_max=1.0)  # each item's own wait: 0.5-1 s (equal jitter)

    def script(hit: Hit) -> Reply:
        return Reply(503, error_body(503, "busy", "server_error")) if hit.attempt == 1 else Reply(201)

    peak = 0

    async def watch() -> None:
        # A spare task lives until the items stream ends, so the count only grows during the run: sampling every
        # 10 ms over seconds sees its plateau.
        nonlocal peak
        while True:
            peak = max(peak, consumer_tasks())
            await anyio.sleep(0.01)

    async with scripted_server(script) as server, anyio.create_task_group() as tg:
        tg.start_soon(watch)
        config = make_config([manifest], tmp_path / "results.jsonl", server.url, concurrency=slots, policy=policy)
        report = await run(config)
        tg.cancel_scope.cancel()

    assert report.exit_code == 0
    records = read_results(tmp_path / "results.jsonl")
    assert len(records) == items and {record["status"] for record in records} == {"succeeded"}
    first_retry = next(i for i, hit in enumerate(server.hits) if hit.attempt == 2)
    assert len({hit.key for hit in server.hits[:first_retry]}) == cap  # one item per task, each task used
    assert peak == cap
    assert server.peak_in_flight <= slots
