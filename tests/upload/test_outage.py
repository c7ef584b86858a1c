"""Run-wide failures are not item failures: an endpoint that vanishes, a server that goes away, 429s that say
"retry now". The items wait for the service, are not charged attempts for it, and stay pending if it never comes
back (exit 4); a lone 404 amid successes stays that item's failure."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ingest.fakeserver import FakeServerConfig, running_fake_server
from ingest.upload.retry import Outcome, RetryPolicy, decide
from tests.helpers.cli import run_cli
from tests.helpers.pipeline import Hit, Reply, error_body, make_config, run, scripted_server
from tests.helpers.records import media_rows, read_results, write_jsonl

pytestmark = pytest.mark.anyio

NOT_FOUND = Reply(404, body=error_body(404, "Not Found", "not_found"))


def records_of(path: Path) -> list[dict[str, object]]:
    return [r for r in read_results(path) if "key" in r] if path.exists() else []


class Switch:
    """A scripted endpoint that is 'gone' for a while (answers 404 to everything, probes included), and 201 else."""

    def __init__(self, after_hits: int, seconds: float | None) -> None:
        self.after_hits = after_hits  # the endpoint vanishes once this many item requests arrived
        self.seconds = seconds  # for this long (None: for good)
        self.since: float | None = None  # when it vanished
        self.hits = 0  # item requests so far

    def __repr__(self) -> str:
        return f"Switch(hits={self.hits}, since={self.since}, seconds={self.seconds})"

    def answer(self, hit: Hit) -> Reply:
        """An item request's answer."""
        self.hits += 1
        return NOT_FOUND if self.gone() else Reply(201)

    def probe(self) -> Reply:
        """The preflight probe's answer."""
        return NOT_FOUND if self.gone() else _probe_ok()

    def gone(self) -> bool:
        if self.since is None and self.hits >= self.after_hits:
            self.since = time.monotonic()
        if self.since is None:
            return False
        return self.seconds is None or time.monotonic() - self.since < self.seconds


async def test_endpoint_that_vanishes_for_a_while_costs_no_item_anything(tmp_path: Path) -> None:
    """Every request 404s for 2 s mid-run (probes too): no item is recorded failed, the run resumes and completes."""
    switch = Switch(after_hits=10, seconds=2.0)
    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(40))
    results = tmp_path / "results.jsonl"
    policy = RetryPolicy(max_attempts=1, backoff_initial=0.01, backoff_max=0.5)
    async with scripted_server(switch.answer, switch.probe) as server:
        report = await run(make_config([manifest], results, server.url, rate=100, policy=policy, max_outage=20))

    assert report.exit_code == 0, report
    records = records_of(results)
    assert len(records) == 40 and {r["status"] for r in records} == {"succeeded"}
    assert server.probes >= 2


async def test_endpoint_that_never_comes_back_stops_with_exit_4_leaving_items_pending(tmp_path: Path) -> None:
    """404 from everything for longer than ``max_outage``: exit 4, no failure records, the rest left for a rerun."""
    switch = Switch(after_hits=5, seconds=None)
    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(30))
    results = tmp_path / "results.jsonl"
    async with scripted_server(switch.answer, switch.probe) as server:
        report = await run(make_config([manifest], results, server.url, rate=100, concurrency=2, max_outage=1.5))

    assert report.exit_code == 4
    assert "max_outage" in str(report.aborted)
    records = records_of(results)
    assert {r["status"] for r in records} <= {"succeeded"}
    assert len(records) < 30
    assert len(server.hits) < 20  # it stopped sending items once the endpoint was gone


async def test_a_lone_404_amid_successes_is_that_items_failure(tmp_path: Path) -> None:
    """One item whose every answer is 404 while the others succeed: that item fails (permanent), nothing pauses."""
    rows = media_rows(20)
    lonely = rows[7]["url"]

    def script(hit: Hit) -> Reply:
        return NOT_FOUND if hit.body["url"] == lonely else Reply(201)

    manifest = write_jsonl(tmp_path / "media.jsonl", rows)
    results = tmp_path / "results.jsonl"
    async with scripted_server(script) as server:
        report = await run(make_config([manifest], results, server.url, rate=200, concurrency=2))

    assert report.exit_code == 1
    failed = [r for r in records_of(results) if r["status"] == "failed"]
    assert [r["item"]["url"] for r in failed] == [lonely]  # type: ignore[index]
    assert failed[0]["error"]["retryable"] is False  # type: ignore[index]
    assert server.probes <= 1


def test_zero_retry_after_means_our_own_backoff() -> None:
    """``Retry-After: 0`` on a 429 is no hint: the wait and the run-wide pause are our backoff, never zero."""
    import random

    policy = RetryPolicy(backoff_initial=0.5, backoff_max=30)
    decision = decide(Outcome.THROTTLED, attempt=1, elapsed=0, server_wait=0.0, policy=policy, rng=random.Random(1))
    assert decision.retry and decision.delay >= 0.25
    assert decision.pause_all is not None and decision.pause_all >= 0.25


async def test_429s_with_retry_after_zero_do_not_exhaust_items(tmp_path: Path) -> None:
    """Every key's first three answers are 429 with ``Retry-After: 0``: items back off on our schedule (no
    hammering) and all succeed with the default attempt budget."""

    def script(hit: Hit) -> Reply:
        if hit.attempt <= 3:
            return Reply(429, body=error_body(429, "slow down", "rate_limited"), headers={"Retry-After": "0"})
        return Reply(201)

    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(8))
    results = tmp_path / "results.jsonl"
    policy = RetryPolicy(backoff_initial=0.05, backoff_max=0.2)
    async with scripted_server(script) as server:
        report = await run(make_config([manifest], results, server.url, rate=500, concurrency=4, policy=policy))

    assert report.exit_code == 0
    assert {r["status"] for r in records_of(results)} == {"succeeded"}
    key = server.hits[0].key
    arrivals = [hit.arrived for hit in server.hits_for(key or "")]
    assert min(b - a for a, b in itertools.pairwise(arrivals)) >= 0.02  # backed off, not hammered


def _probe_ok() -> Reply:
    return Reply(422, body=error_body(422, "Invalid request body: url: Field required"))


# -- a server that goes away: a TCP proxy in front of the fake server, switched off and on -------------------


@dataclass
class Proxy:
    """Forwards loopback connections to ``target_port``; ``off()`` closes the listener and every connection (new
    ones are refused), ``on()`` listens again on the same port."""

    target_port: int
    port: int = 0
    _server: asyncio.AbstractServer | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def on(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def off(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))


@contextlib.asynccontextmanager
async def proxied(target_port: int) -> AsyncIterator[Proxy]:
    proxy = Proxy(target_port)
    await proxy.on()
    try:
        yield proxy
    finally:
        with contextlib.suppress(AssertionError):
            await proxy.off()


async def test_server_away_for_20s_mid_run_loses_no_attempt_budget_and_completes(tmp_path: Path) -> None:
    """The server refuses connections for 20 s mid-run (``--max-attempts 2``): the run waits, resumes when it is
    back, and every item succeeds; no item is charged for the outage."""
    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(60))
    results = tmp_path / "results.jsonl"
    async with running_fake_server(FakeServerConfig()) as server:
        port = int(server.url.rsplit(":", 1)[1].split("/")[0])
        async with proxied(port) as proxy:

            async def outage() -> None:
                while server.ledger.stats()["created"] < 20:  # noqa: ASYNC110 (the ledger has no event to wait on)
                    await asyncio.sleep(0.05)
                await proxy.off()
                await asyncio.sleep(20)
                await proxy.on()

            task = asyncio.create_task(outage())
            done = await run_cli(
                "run",
                str(manifest),
                "--results",
                str(results),
                "--base-url",
                f"http://127.0.0.1:{proxy.port}/v1",
                "--rate",
                "20",
                "--concurrency",
                "4",
                "--max-attempts",
                "2",
                "--backoff-initial",
                "0.05",
                "--backoff-max",
                "2",
                "--log-format",
                "json",
            )
            await task
        stats = server.ledger.stats()

    assert done.returncode == 0, done.stderr[-3000:]
    records = records_of(results)
    assert len(records) == 60 and {r["status"] for r in records} == {"succeeded"}
    assert stats["created"] == 60 and stats["duplicate_bodies"] == 0
    assert done.event("service.outage") and done.event("service.recovered")["outage_s"] >= 15
