"""The consumer's attempt loop on a fake clock: what it logs (``upload.retry``, ``limiter.paused``) and records."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
import structlog

from ingest.admission.admit import WorkItem
from ingest.admission.keys import KeyDeriver, body_sha256
from ingest.credentials import ApiKey
from ingest.errors import IngestError
from ingest.models import canonical_bytes
from ingest.results.record import Result, Status
from ingest.run.stats import RunStats
from ingest.upload.client import AssetsClient, open_session
from ingest.upload.consumer import Consumer
from ingest.upload.health import ServiceHealth
from ingest.upload.limiter import RateLimiter
from ingest.upload.options import ClientOptions
from ingest.upload.retry import RetryPolicy
from tests.helpers import KEY
from tests.helpers.clock import FakeClock
from tests.helpers.pipeline import Hit, Reply, Script, error_body, scripted_server
from tests.helpers.records import media_url

pytestmark = pytest.mark.anyio


@dataclass
class Brakes:
    """A spy for the run's control: never stopping; remembers an abort."""

    stopping: bool = False
    aborted: IngestError | None = None

    def abort(self, error: IngestError) -> None:
        self.aborted = error


def work_item(i: int) -> WorkItem:
    body: dict[str, object] = {"url": media_url(i), "type": "image"}
    raw = canonical_bytes(body)
    return WorkItem("m.jsonl", i + 1, KeyDeriver().derive(body), body, raw, body_sha256(raw))


async def upload_one(
    script: Script, clock: FakeClock, *, max_attempts: int = 3
) -> tuple[Result | None, Brakes, list[Hit]]:
    async with scripted_server(script) as server:
        options = ClientOptions(base_url=server.url, concurrency=1)
        async with open_session(options) as session:
            brakes = Brakes()
            client = AssetsClient(session, ApiKey(KEY), options)
            consumer = Consumer(
                client,
                limiter=RateLimiter(1000, clock=clock, sleep=clock.sleep),
                policy=RetryPolicy(max_attempts=max_attempts),
                brakes=brakes,
                health=ServiceHealth(client, max_outage=60, stop=brakes.abort),
                counters=RunStats(),
                run_id="r1",
                rng=random.Random(1),
                sleep=clock.sleep,
            )
            result = await consumer.upload(work_item(1))
        return result, brakes, server.hits


async def test_a_5xx_is_retried_after_a_logged_backoff_on_the_fake_clock() -> None:
    """A 503 without a hint is retried after our own backoff, logged as ``upload.retry``; nothing really sleeps."""
    clock = FakeClock()
    script = lambda hit: Reply(503, error_body(503, "busy", "server_error")) if hit.attempt == 1 else Reply(201)  # noqa: E731
    with structlog.testing.capture_logs() as logs:
        result, _, hits = await upload_one(script, clock)
    assert result is not None and result.status is Status.SUCCEEDED and result.attempts == 2
    retries = [entry for entry in logs if entry["event"] == "upload.retry"]
    assert len(retries) == 1 and retries[0]["status"] == 503 and retries[0]["attempt"] == 1
    assert clock.slept == pytest.approx(retries[0]["delay"], abs=1e-3)
    assert len(hits) == 2


async def test_a_sporadic_429_delays_only_its_own_item() -> None:
    """One 429 with ``Retry-After`` makes its item wait the server's seconds; the run is not paused (issue 13)."""
    clock = FakeClock()
    throttled = Reply(429, error_body(429, "slow down", "rate_limited"), headers={"Retry-After": "7"})
    script = lambda hit: throttled if hit.attempt == 1 else Reply(201)  # noqa: E731
    with structlog.testing.capture_logs() as logs:
        result, _, hits = await upload_one(script, clock)
    assert result is not None and result.status is Status.SUCCEEDED
    assert [entry for entry in logs if entry["event"] == "limiter.paused"] == []
    retries = [entry for entry in logs if entry["event"] == "upload.retry"]
    assert len(retries) == 1 and retries[0]["delay"] == 7
    assert clock.slept >= 7  # the item itself waited the server's time before its retry
    assert len(hits) == 2


async def test_a_pattern_of_429s_pauses_the_whole_run_and_says_so() -> None:
    """Four 429s in a row are a limit, not noise: a run-wide pause (``limiter.paused``) of the server's seconds."""
    clock = FakeClock()
    throttled = Reply(429, error_body(429, "slow down", "rate_limited"), headers={"Retry-After": "7"})
    script = lambda hit: throttled if hit.attempt <= 4 else Reply(201)  # noqa: E731
    with structlog.testing.capture_logs() as logs:
        result, _, hits = await upload_one(script, clock, max_attempts=6)
    assert result is not None and result.status is Status.SUCCEEDED
    paused = [entry for entry in logs if entry["event"] == "limiter.paused"]
    assert len(paused) == 1 and paused[0]["seconds"] == 7 and paused[0]["status"] == 429
    assert clock.slept >= 4 * 7  # every retry came after its Retry-After, the last one held by the pause
    assert len(hits) == 5


async def test_a_rejected_key_aborts_the_run_and_leaves_the_item_pending() -> None:
    """A 401 aborts through the run's brakes (logged once as ``auth.rejected``) and records nothing."""
    clock = FakeClock()
    with structlog.testing.capture_logs() as logs:
        result, brakes, _ = await upload_one(
            lambda hit: Reply(401, error_body(401, "bad key", "authorization_error")), clock
        )
    assert result is None
    assert brakes.aborted is not None
    assert [entry["event"] for entry in logs].count("auth.rejected") == 1
