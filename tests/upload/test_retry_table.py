"""docs/design.md § Retry policy, row by row, over real HTTP: a scripted spy server answers each attempt as the row
says, and the test checks how many attempts it saw, that all of them carried the item's one key, and the record.

Waits on the server's word are checked with lower bounds only (the retry did not come *before* the server said).
"""

from __future__ import annotations

import math
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from ingest.errors import AuthRejected
from ingest.run.pipeline import RunReport
from ingest.upload.retry import RetryPolicy
from tests.helpers.pipeline import Hit, Reply, Script, ScriptedServer, error_body, make_config, run, scripted_server
from tests.helpers.records import media_rows, media_url, read_results, write_jsonl

pytestmark = pytest.mark.anyio

POLICY = RetryPolicy(max_attempts=3, conflict_window=0.5, backoff_initial=0.01, backoff_max=0.05)


def first_then_201(reply: Reply, *, failures: int = 1) -> Script:
    """A script: ``reply`` for the first ``failures`` attempts of every key, then a 201."""

    def script(hit: Hit) -> Reply:
        return reply if hit.attempt <= failures else Reply(201)

    return script


async def run_one(tmp_path: Path, server: ScriptedServer, **options: Any) -> tuple[RunReport, list[dict[str, Any]]]:
    """Run a one-item manifest against ``server``; the report and the records."""
    manifest = write_jsonl(tmp_path / "one.jsonl", media_rows(1))
    results = tmp_path / "results.jsonl"
    options.setdefault("policy", POLICY)
    options.setdefault("concurrency", 1)
    report = await run(make_config([manifest], results, server.url, **options))
    return report, (read_results(results) if results.exists() else [])


def assert_one_key(server: ScriptedServer, record: dict[str, Any] | None = None) -> None:
    """Every attempt carried the same Idempotency-Key (the record's, when there is one)."""
    keys = {hit.key for hit in server.hits}
    assert len(keys) == 1
    assert None not in keys
    if record is not None:
        assert keys == {record["key"]}


def gap_after_first(server: ScriptedServer) -> float:
    """Seconds from the server answering attempt 1 to attempt 2 arriving."""
    first, second = server.hits[0], server.hits[1]
    assert first.answered is not None
    return second.arrived - first.answered


# -- 201 ------------------------------------------------------------------------------------------------------


async def test_201_is_success_with_the_asset_recorded(tmp_path: Path) -> None:
    """A 201 ends the item at once: one attempt, status succeeded, the returned asset in the record."""
    async with scripted_server(lambda hit: Reply(201)) as server:
        report, (record,) = await run_one(tmp_path, server)
    assert len(server.hits) == 1
    assert report.exit_code == 0
    assert record["status"] == "succeeded"
    assert record["attempts"] == 1
    assert record["http_status"] == 201
    assert record["asset"]["url"] == media_url(0)
    assert record["asset"]["request_id"] == "req-scripted"
    assert_one_key(server, record)


# -- 429 ------------------------------------------------------------------------------------------------------


async def test_429_waits_for_retry_after_then_succeeds(tmp_path: Path) -> None:
    """A 429 with ``Retry-After: 1`` is retried with the same key no sooner than the server said."""
    throttled = Reply(429, body=error_body(429, "slow down", "rate_limited"), headers={"Retry-After": "1"})
    async with scripted_server(first_then_201(throttled)) as server:
        report, (record,) = await run_one(tmp_path, server)
    assert len(server.hits) == 2
    assert gap_after_first(server) >= 0.9
    assert record["status"] == "succeeded"
    assert record["attempts"] == 2
    assert record["http_status"] == 201
    assert report.exit_code == 0
    assert_one_key(server, record)


async def test_retry_after_http_date_is_measured_against_the_date_header(tmp_path: Path) -> None:
    """``Retry-After`` as an HTTP-date one second after the response's ``Date`` makes the client wait ~1 s."""

    def script(hit: Hit) -> Reply:
        if hit.attempt > 1:
            return Reply(201)
        sent = math.floor(time.time())
        headers = {"Date": formatdate(sent, usegmt=True), "Retry-After": formatdate(sent + 1, usegmt=True)}
        return Reply(429, body=error_body(429, "slow down", "rate_limited"), headers=headers)

    async with scripted_server(script) as server:
        _, (record,) = await run_one(tmp_path, server)
    assert len(server.hits) == 2
    assert gap_after_first(server) >= 0.9
    assert record["status"] == "succeeded"
    assert_one_key(server, record)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"RateLimit-Policy": '"default";q=10;w=1', "RateLimit": '"default";r=0;t=1'}, id="ratelimit-t"),
        pytest.param(
            {"RateLimit-Limit": "10", "RateLimit-Remaining": "0", "RateLimit-Reset": "1"}, id="ratelimit-reset"
        ),
        pytest.param({"x-ratelimit-limit": "10", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "1"}, id="x-reset"),
        # precedence: the earlier form wins over a later one that says "now"
        pytest.param({"Retry-After": "1", "RateLimit": '"default";r=0;t=0'}, id="retry-after-before-ratelimit"),
        pytest.param({"RateLimit": '"default";r=0;t=1', "x-ratelimit-reset": "0"}, id="ratelimit-before-x-reset"),
    ],
)
async def test_429_rate_limit_header_forms_are_honoured(tmp_path: Path, headers: dict[str, str]) -> None:
    """Each 429 hint form (IETF ``RateLimit`` t=, ``RateLimit-Reset``, ``x-ratelimit-reset``) sets the wait."""
    throttled = Reply(429, body=error_body(429, "slow down", "rate_limited"), headers=headers)
    async with scripted_server(first_then_201(throttled)) as server:
        _, (record,) = await run_one(tmp_path, server)
    assert len(server.hits) == 2
    assert gap_after_first(server) >= 0.9
    assert record["status"] == "succeeded"
    assert_one_key(server, record)


async def test_a_sporadic_429_does_not_hold_the_other_consumers(tmp_path: Path) -> None:
    """While one item waits out a sporadic 429's Retry-After, the other consumers go on sending (issue 13)."""
    throttled_url = media_url(0)

    def script(hit: Hit) -> Reply:
        if hit.body["url"] == throttled_url:
            if hit.attempt == 1:
                return Reply(429, body=error_body(429, "slow down", "rate_limited"), headers={"Retry-After": "1"})
            return Reply(201)
        if hit.attempt == 1:
            return Reply(500, delay=0.2)  # still in flight when the 429 arrives; its retry need not wait for it
        return Reply(201)

    manifest = write_jsonl(tmp_path / "two.jsonl", media_rows(2))
    results = tmp_path / "results.jsonl"
    async with scripted_server(script) as server:
        report = await run(make_config([manifest], results, server.url, concurrency=2, policy=POLICY))

    assert report.exit_code == 0
    throttled = [hit for hit in server.hits if hit.body["url"] == throttled_url]
    other = [hit for hit in server.hits if hit.body["url"] != throttled_url]
    assert len(throttled) == 2
    assert len(other) == 2
    assert throttled[0].answered is not None
    retry_after_ends = throttled[0].answered + 0.9
    assert throttled[1].arrived >= retry_after_ends  # the throttled item waited its own Retry-After
    assert other[1].arrived < retry_after_ends  # and nobody else did
    assert {record["status"] for record in read_results(results)} == {"succeeded"}


# -- 5xx, connection errors, timeouts -------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_is_retried_with_the_same_key(tmp_path: Path, status: int) -> None:
    """A 5xx answer is retried (backoff) with the same key and the item then succeeds."""
    failing = Reply(status, body=error_body(status, "oops", "server_error"))
    async with scripted_server(first_then_201(failing, failures=2)) as server:
        report, (record,) = await run_one(tmp_path, server)
    assert len(server.hits) == 3
    assert record["status"] == "succeeded"
    assert record["attempts"] == 3
    assert record["http_status"] == 201
    assert record["error"] is None
    assert report.stats.retries == 2
    assert_one_key(server, record)


async def test_5xx_forever_fails_after_max_attempts_as_retryable(tmp_path: Path) -> None:
    """A server that keeps answering 503 gets exactly ``max_attempts`` tries; the failure stays retryable."""
    async with scripted_server(lambda hit: Reply(503, body=error_body(503, "down", "server_error"))) as server:
        report, (record,) = await run_one(tmp_path, server)
    assert len(server.hits) == POLICY.max_attempts
    assert record["status"] == "failed"
    assert record["attempts"] == POLICY.max_attempts
    assert record["http_status"] == 503
    assert record["error"]["retryable"] is True
    assert record["error"]["type"] == "server_error"
    assert "attempts" in record["error"]["message"]
    assert report.exit_code == 1
    assert_one_key(server, record)


async def test_connection_drop_is_retried(tmp_path: Path) -> None:
    """A connection closed without an answer is retried with the same key."""
    async with scripted_server(first_then_201(Reply(drop=True))) as server:
        _, (record,) = await run_one(tmp_path, server)
    assert len(server.hits) == 2
    assert record["status"] == "succeeded"
    assert record["attempts"] == 2
    assert_one_key(server, record)


async def test_timeout_is_retried(tmp_path: Path) -> None:
    """An answer slower than ``request_timeout`` counts as a timeout and is retried with the same key."""
    async with scripted_server(first_then_201(Reply(201, delay=1.0))) as server:
        _, (record,) = await run_one(tmp_path, server, request_timeout=0.3)
    assert len(server.hits) == 2
    assert record["status"] == "succeeded"
    assert record["attempts"] == 2
    assert_one_key(server, record)


async def test_timeout_forever_is_recorded_as_timeout(tmp_path: Path) -> None:
    """An item whose every attempt times out fails as a retryable ``timeout`` without an HTTP status."""
    async with scripted_server(lambda hit: Reply(201, delay=1.0)) as server:
        _, (record,) = await run_one(tmp_path, server, request_timeout=0.2)
    assert len(server.hits) == POLICY.max_attempts
    assert record["status"] == "failed"
    assert record["http_status"] is None
    assert record["error"]["type"] == "timeout"
    assert record["error"]["retryable"] is True
    assert_one_key(server, record)


# -- 409 ------------------------------------------------------------------------------------------------------


async def test_409_is_retried_then_succeeds(tmp_path: Path) -> None:
    """A 409 (an earlier attempt with this key is in flight) is retried with the same key."""
    in_progress = Reply(409, body=error_body(409, "request with this idempotency key is in progress"))
    async with scripted_server(first_then_201(in_progress)) as server:
        _, (record,) = await run_one(tmp_path, server)
    assert len(server.hits) == 2
    assert record["status"] == "succeeded"
    assert record["attempts"] == 2
    assert_one_key(server, record)


async def test_409_forever_fails_after_the_conflict_window(tmp_path: Path) -> None:
    """A key stuck "in progress" is retried (beyond ``max_attempts``) until ``conflict_window`` seconds after the
    first 409, the last attempt at the window's end, then recorded as a retryable failure."""
    in_progress = Reply(409, body=error_body(409, "request with this idempotency key is in progress"))
    policy = RetryPolicy(max_attempts=2, conflict_window=0.6, backoff_initial=0.05, backoff_max=0.1)
    async with scripted_server(lambda hit: in_progress) as server:
        _, (record,) = await run_one(tmp_path, server, policy=policy)
    assert len(server.hits) > 2
    assert server.hits[-1].arrived - server.hits[0].arrived >= 0.6
    assert record["status"] == "failed"
    assert record["attempts"] == len(server.hits)
    assert record["http_status"] == 409
    assert record["error"]["retryable"] is True
    assert_one_key(server, record)


# -- permanent failures and auth ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_4xx_is_a_permanent_failure_without_retry(tmp_path: Path, status: int) -> None:
    """400, 404 and 422 fail the item after one attempt; the record says it is not retryable."""
    error_type = "not_found" if status == 404 else "validation_error"
    rejected = Reply(status, body=error_body(status, f"rejected with {status}", error_type))
    async with scripted_server(lambda hit: rejected) as server:
        report, (record,) = await run_one(tmp_path, server)
    assert len(server.hits) == 1
    assert record["status"] == "failed"
    assert record["attempts"] == 1
    assert record["http_status"] == status
    assert record["error"] == {
        "type": error_type,
        "message": f"rejected with {status}",
        "request_id": f"req-{status}",
        "retryable": False,
    }
    assert report.exit_code == 1
    assert_one_key(server, record)


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failure_aborts_the_run(tmp_path: Path, status: int) -> None:
    """401/403 abort the whole run after one attempt (exit 3); the item gets no record and stays pending."""
    denied = Reply(status, body=error_body(status, "Invalid API key", "authorization_error"))
    manifest = write_jsonl(tmp_path / "three.jsonl", media_rows(3))
    results = tmp_path / "results.jsonl"
    async with scripted_server(lambda hit: denied) as server:
        report = await run(make_config([manifest], results, server.url, concurrency=1, policy=POLICY))
    assert len(server.hits) == 1
    assert report.exit_code == 3
    assert isinstance(report.aborted, AuthRejected)
    assert report.aborted.status == status
    assert not results.exists() or read_results(results) == []


# -- odd bodies -----------------------------------------------------------------------------------------------


async def test_html_error_body_from_a_proxy_is_tolerated(tmp_path: Path) -> None:
    """A proxy's HTML 502 page is not JSON: the attempt is still a retryable 502 and the message names it."""
    html = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    page = Reply(502, body=html, content_type="text/html")
    async with scripted_server(lambda hit: page) as server:
        _, (record,) = await run_one(tmp_path, server)
    assert len(server.hits) == POLICY.max_attempts
    assert record["status"] == "failed"
    assert record["http_status"] == 502
    assert record["error"]["type"] == "server_error"
    assert "HTTP 502" in record["error"]["message"]
    assert "Bad Gateway" in record["error"]["message"]
    assert record["error"]["retryable"] is True


async def test_empty_error_body_is_tolerated(tmp_path: Path) -> None:
    """An error answer with an empty body becomes a synthetic error naming the status."""
    async with scripted_server(lambda hit: Reply(404, body=b"")) as server:
        _, (record,) = await run_one(tmp_path, server)
    assert len(server.hits) == 1
    assert record["status"] == "failed"
    assert record["http_status"] == 404
    assert record["error"]["type"] == "not_found"
    assert "HTTP 404" in record["error"]["message"]
    assert "empty body" in record["error"]["message"]
    assert record["error"]["retryable"] is False


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_oversized_response_body_is_an_error_not_a_crash(tmp_path: Path, chunked: bool) -> None:
    """A response larger than ``max_response_bytes`` is a retryable ``bad_response``, retried with the same key."""
    huge = Reply(201, body=b'{"asset": {"padding": "' + b"x" * 8192 + b'"}}', chunked=chunked)
    async with scripted_server(lambda hit: huge) as server:
        report, (record,) = await run_one(tmp_path, server, max_response_bytes=1024)
    assert len(server.hits) == POLICY.max_attempts
    assert record["status"] == "failed"
    assert record["error"]["type"] == "bad_response"
    assert "1024" in record["error"]["message"]
    assert record["error"]["retryable"] is True
    assert report.exit_code == 1
    assert_one_key(server, record)
