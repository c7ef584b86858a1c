"""The embedded fake Assets API: spec-faithful answers, idempotency, seeded faults, ledger and profiles.

Every HTTP test talks to a real server on 127.0.0.1 through a real ``aiohttp.ClientSession``.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import orjson
import pytest
from multidict import CIMultiDictProxy
from pydantic import ValidationError

import ingest.fakeserver
from ingest.fakeserver import (
    FakeServer,
    FakeServerConfig,
    FaultConfig,
    Ledger,
    available_profiles,
    load_profile,
    running_fake_server,
    serve_forever,
)
from ingest.fakeserver.config import packaged_profiles_dir
from ingest.fakeserver.ratelimit import TokenBucket
from ingest.models import ErrorEnvelope, UploadRequest, UploadResponse

REPO_ROOT = Path(__file__).resolve().parents[2]
AUTH = {"Authorization": "Key fake-key"}
BODY: dict[str, Any] = {
    "url": "https://v3b.fal.media/files/b/0a9b4900/cat%20photo.png",
    "type": "image",
    "prompt": "a cat on a sofa",
    "collection_id": "d8b6elcregj72v34jr8g",
    "favorite": True,
    "tag_ids": ["43ce3411-1a25-4d14-875e-3562d341b090", "tag-2"],
}

Answer = tuple[int, Any, CIMultiDictProxy[str]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@contextlib.asynccontextmanager
async def serving(
    faults: FaultConfig | None = None, **config: Any
) -> AsyncIterator[tuple[FakeServer, aiohttp.ClientSession]]:
    server_config = FakeServerConfig(faults=faults or FaultConfig(), **config)
    async with running_fake_server(server_config) as server, aiohttp.ClientSession() as session:
        yield server, session


async def upload(
    session: aiohttp.ClientSession,
    server: FakeServer,
    body: Any = BODY,
    *,
    key: str | None = None,
    headers: dict[str, str] | None = None,
    give_up_after: float | None = None,
) -> Answer:
    sent = dict(AUTH if headers is None else headers)
    if key is not None:
        sent["Idempotency-Key"] = key
    raw = body if isinstance(body, bytes | io.BytesIO) else orjson.dumps(body)
    sent.setdefault("Content-Type", "application/json")
    url, timeout = f"{server.url}/assets/uploads", aiohttp.ClientTimeout(total=give_up_after)
    async with session.post(url, data=raw, headers=sent, timeout=timeout) as r:
        return r.status, orjson.loads(await r.read()), r.headers


def error_of(answer: Answer) -> ErrorEnvelope:
    _, payload, headers = answer
    envelope = ErrorEnvelope.model_validate(payload)
    assert envelope.error.request_id == headers["x-request-id"]
    return envelope


def body_sha256(body: dict[str, Any]) -> str:
    return hashlib.sha256(UploadRequest.model_validate(body).body_bytes()).hexdigest()


# --- the 201 ---------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_valid_upload_returns_a_spec_valid_asset() -> None:
    """A valid upload is answered 201 with an asset carrying all 16 spec fields, derived from the request."""
    async with serving() as (server, session):
        status, payload, headers = await upload(session, server)
    assert status == 201
    asset = UploadResponse.model_validate(payload).asset
    assert len(payload["asset"]) == 16
    uuid.UUID(asset.vector_id)
    assert asset.request_id == headers["x-request-id"]
    assert (asset.url, asset.type, asset.prompt) == (BODY["url"], "image", BODY["prompt"])
    assert asset.title == "cat photo"
    assert asset.created_at is not None and asset.created_at.endswith("Z")
    datetime.fromisoformat(asset.created_at)
    assert (asset.source, asset.endpoint, asset.similarity) == ("upload", None, None)
    assert (asset.width, asset.height, asset.content_type) == (1024, 1024, "image/png")
    assert asset.is_favorited is True
    assert asset.collection_ids == [BODY["collection_id"]]
    assert [t.id for t in asset.tags] == BODY["tag_ids"]
    assert all(t.created_at == asset.created_at for t in asset.tags)


@pytest.mark.anyio
async def test_audio_upload_has_no_pixel_size_and_defaults() -> None:
    """An audio upload with only url and type has null width and height, no collections, tags or favorite."""
    async with serving() as (server, session):
        status, payload, _ = await upload(session, server, {"url": "https://x.test/a.mp3", "type": "audio"})
    asset = UploadResponse.model_validate(payload).asset
    assert status == 201
    assert (asset.width, asset.height, asset.prompt) == (None, None, None)
    assert (asset.collection_ids, asset.tags, asset.is_favorited) == ([], [], False)
    assert asset.content_type == "audio/mpeg"


# --- authentication ---------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer fake-key"}, {"Authorization": "Key "}])
async def test_missing_or_malformed_auth_is_401(headers: dict[str, str]) -> None:
    """A request without a ``Key`` credential gets 401 authorization_error "Authentication required"."""
    async with serving() as (server, session):
        answer = await upload(session, server, headers=headers)
    assert answer[0] == 401
    error = error_of(answer).error
    assert (error.type, error.message) == ("authorization_error", "Authentication required")
    assert server.ledger.created == 0


@pytest.mark.anyio
async def test_wrong_key_is_401_before_any_fault() -> None:
    """A wrong key gets 401 "Invalid API key", even when every request would otherwise be rate-limited."""
    async with serving(FaultConfig(p_429=1.0)) as (server, session):
        answer = await upload(session, server, headers={"Authorization": "Key not-the-key"})
    assert answer[0] == 401
    assert error_of(answer).error.message == "Invalid API key"


@pytest.mark.anyio
async def test_admin_revoke_makes_every_upload_403() -> None:
    """After ``POST /_admin/revoke`` the key is refused with 403 "Access denied: key revoked"."""
    async with serving() as (server, session):
        assert (await upload(session, server))[0] == 201
        async with session.post(f"{server.admin_url}/revoke") as r:
            assert r.status == 204
        answer = await upload(session, server)
    assert answer[0] == 403
    error = error_of(answer).error
    assert (error.type, error.message) == ("authorization_error", "Access denied: key revoked")


@pytest.mark.anyio
async def test_revoke_after_n_requests() -> None:
    """With ``revoke_after=3`` three uploads succeed, then each one gets a 403, and the ledger counts them."""
    async with serving(FaultConfig(revoke_after=3)) as (server, session):
        statuses = [(await upload(session, server))[0] for _ in range(6)]
    assert statuses == [201, 201, 201, 403, 403, 403]
    stats = server.ledger.stats()
    assert (stats["auth_failures"], stats["requests_after_first_auth_failure"]) == (3, 2)


# --- body validation --------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("raw", "content_type"),
    [(b"{not json", "application/json"), (orjson.dumps(BODY), "text/plain"), (b"\xff", "application/json")],
)
async def test_body_that_is_not_json_is_400(raw: bytes, content_type: str) -> None:
    """A body that is not JSON (or not sent as JSON) gets 400 validation_error in the standard envelope."""
    async with serving() as (server, session):
        answer = await upload(session, server, raw, headers={**AUTH, "Content-Type": content_type})
    assert answer[0] == 400
    assert error_of(answer).error.type == "validation_error"


@pytest.mark.anyio
async def test_body_over_one_mebibyte_is_400() -> None:
    """A body over 1 MiB gets 400 (the spec has no 413), and nothing is created."""
    async with serving() as (server, session):
        # A file-like body: aiohttp warns about large raw bytes.
        huge = io.BytesIO(orjson.dumps({**BODY, "prompt": "x" * (1024 * 1024)}))
        answer = await upload(session, server, huge)
    assert answer[0] == 400
    assert "larger than" in error_of(answer).error.message
    assert server.ledger.created == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"url": "ftp://host/a.png", "type": "gif", "color": "red"}, ["url", "type", "color"]),
        ({"type": "image"}, ["url"]),
        ({**BODY, "favorite": "yes", "prompt": ""}, ["favorite", "prompt"]),
        ({**BODY, "tag_ids": "t1"}, ["tag_ids"]),
        ([BODY], ["body"]),
    ],
)
async def test_schema_violation_is_422_naming_the_fields(body: Any, fields: list[str]) -> None:
    """A JSON body that breaks the schema gets 422 validation_error, with a message naming each bad field."""
    async with serving() as (server, session):
        answer = await upload(session, server, body)
    assert answer[0] == 422
    error = error_of(answer).error
    assert error.type == "validation_error"
    assert all(field in error.message for field in fields), error.message


# --- idempotency ------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_same_key_same_body_replays_the_same_asset() -> None:
    """A repeated key with the same body replays the stored 201 byte for byte, marked, without a new asset."""
    async with serving() as (server, session):
        body = {name: value for name, value in BODY.items() if name != "favorite"}
        first = await upload(session, server, body, key="k1")
        # The same canonical body: other key order, and a default spelled out.
        again = await upload(session, server, {"favorite": False, **dict(reversed(body.items()))}, key="k1")
    assert (first[0], again[0]) == (201, 201)
    assert again[1] == first[1]
    assert again[2]["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first[2]
    assert again[2]["x-request-id"] != first[2]["x-request-id"]
    assert (server.ledger.created, server.ledger.replayed) == (1, 1)


@pytest.mark.anyio
async def test_same_key_other_body_is_422_payload_changed() -> None:
    """A key reused with a different body gets 422 "payload changed" and creates nothing."""
    async with serving() as (server, session):
        await upload(session, server, key="k1")
        answer = await upload(session, server, {**BODY, "prompt": "a dog"}, key="k1")
    assert answer[0] == 422
    assert "payload changed" in error_of(answer).error.message
    assert (server.ledger.created, server.ledger.payload_changed_422) == (1, 1)


@pytest.mark.anyio
async def test_requests_without_a_key_always_create() -> None:
    """Without an Idempotency-Key every request creates a new asset, and the ledger counts the duplicates."""
    async with serving() as (server, session):
        for _ in range(3):
            await upload(session, server)
    stats = server.ledger.stats()
    assert (stats["created"], stats["duplicate_bodies"], stats["duplicate_urls"]) == (3, 1, 1)
    assert stats["keys"] == 0


@pytest.mark.anyio
async def test_concurrent_same_key_during_latency_gets_one_409() -> None:
    """A second request with a key still being processed gets 409 "in progress"; only one asset is created."""
    statuses: list[int] = []
    async with serving(FaultConfig(base_latency_s=0.3)) as (server, session):

        async def send() -> None:
            answer = await upload(session, server, key="k1")
            statuses.append(answer[0])
            if answer[0] == 409:
                error = error_of(answer).error
                assert (error.type, error.message) == (
                    "validation_error",
                    "request with this idempotency key is in progress",
                )

        async with anyio.create_task_group() as tg:
            tg.start_soon(send)
            await anyio.sleep(0.05)
            tg.start_soon(send)
    assert sorted(statuses) == [201, 409]
    assert (server.ledger.created, server.ledger.conflicts_409) == (1, 1)


@pytest.mark.anyio
async def test_keys_expire_after_the_ttl() -> None:
    """With ``idempotency_ttl_s`` set, a key older than the TTL is forgotten and creates a new asset."""
    async with serving(idempotency_ttl_s=0.1) as (server, session):
        await upload(session, server, key="k1")
        await anyio.sleep(0.15)
        answer = await upload(session, server, key="k1")
    assert "Idempotent-Replayed" not in answer[2]
    assert server.ledger.stats()["duplicate_bodies"] == 1


# --- faults -----------------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("hint", "expected"),
    [
        ("retry-after-seconds", {"Retry-After": "2"}),
        ("ratelimit", {"RateLimit": '"default";r=0;t=2', "RateLimit-Policy": '"default";q=10;w=1'}),
        ("ratelimit-reset", {"RateLimit-Reset": "2", "RateLimit-Remaining": "0", "RateLimit-Limit": "10"}),
        ("x-ratelimit-reset", {"x-ratelimit-reset": "2"}),
        ("none", {}),
    ],
)
async def test_429_hint_styles(hint: Any, expected: dict[str, str]) -> None:
    """Each rate-limit hint style puts the announced wait, rounded up to whole seconds, in its own headers."""
    async with serving(FaultConfig(p_429=1.0, retry_after_s=1.5, rate_limit_hint=hint)) as (server, session):
        answer = await upload(session, server, key="k1")
    status, _, headers = answer
    assert status == 429
    assert error_of(answer).error.type == "rate_limited"
    assert {name: headers.get(name) for name in expected} == expected
    hint_headers = {"retry-after", "ratelimit", "ratelimit-reset", "x-ratelimit-reset"}
    assert hint_headers & {h.lower() for h in headers} == {h.lower() for h in expected} & hint_headers
    assert server.ledger.created == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("style", "expected"),
    [
        ("ratelimit", [{"RateLimit-Policy": '"default";q=20;w=1', "RateLimit": f'"default";r={r};t=1'}
                       for r in (1, 0)]),
        ("ratelimit-reset", [{"RateLimit-Limit": "20", "RateLimit-Remaining": str(r), "RateLimit-Reset": "1"}
                             for r in (1, 0)]),
    ],
)  # fmt: skip
async def test_quota_headers_on_every_answer(style: Any, expected: list[dict[str, str]]) -> None:
    """With ``quota_headers``, a 201 announces the bucket's policy and the tokens left; so does the 429 after it."""
    config = FaultConfig(bucket_rate=20.0, bucket_burst=2, quota_headers=style)
    async with serving(config) as (server, session):
        answers = [await upload(session, server, key=f"k{i}") for i in range(3)]
    assert [status for status, _, _ in answers] == [201, 201, 429]
    seen = [{name: headers.get(name) for name in expected[0]} for _, _, headers in answers]
    assert seen[:2] == expected
    assert seen[2] == expected[1]  # the 429: none left, a token within the second


@pytest.mark.anyio
async def test_429_retry_after_as_http_date() -> None:
    """The HTTP-date hint is an IMF-fixdate whose distance from the Date header is the wait, rounded up."""
    config = FaultConfig(p_429=1.0, retry_after_s=1.5, rate_limit_hint="retry-after-date")
    async with serving(config) as (server, session):
        _, _, headers = await upload(session, server)
    assert headers["Retry-After"].endswith(" GMT")
    waited = parsedate_to_datetime(headers["Retry-After"]) - parsedate_to_datetime(headers["Date"])
    assert waited == timedelta(seconds=2)


@pytest.mark.anyio
async def test_server_error_fault_stores_nothing() -> None:
    """A 5xx fault creates and stores nothing: the next success is a fresh creation, not a replay."""
    async with serving(FaultConfig(p_5xx=0.6, retry_after_s=0.3, seed=3)) as (server, session):
        answers = [await upload(session, server, key="k1") for _ in range(12)]
    statuses = [a[0] for a in answers]
    failures = statuses[: statuses.index(201)]
    assert failures and set(failures) <= {500, 502, 503}
    assert all(error_of(a).error.type == "server_error" for a in answers if a[0] >= 500)
    assert all(a[2]["Retry-After"] == "1" for a in answers if a[0] == 503)
    first_success = answers[statuses.index(201)]
    assert "Idempotent-Replayed" not in first_success[2]
    assert server.ledger.created == 1


@pytest.mark.anyio
async def test_commit_then_fail_stores_and_the_retry_replays(caplog: pytest.LogCaptureFixture) -> None:
    """After a commit-then-fail (500 or dropped connection) the asset exists; a retry replays it, quietly."""
    outcomes: set[str] = set()
    async with serving(FaultConfig(p_commit_then_fail=1.0)) as (server, session):
        for n in range(8):
            body = {**BODY, "url": f"https://x.test/{n}.png"}
            try:
                status, _, _ = await upload(session, server, body, key=f"k{n}")
                outcomes.add(str(status))
            except aiohttp.ClientConnectionError:
                outcomes.add("dropped")
            retry = await upload(session, server, body, key=f"k{n}")
            assert (retry[0], retry[2]["Idempotent-Replayed"]) == (201, "true")
    assert outcomes == {"500", "dropped"}
    stats = server.ledger.stats()
    assert (stats["created"], stats["replayed"], stats["duplicate_bodies"]) == (8, 8, 0)
    assert stats["dropped"] == 8 - stats["by_status"]["500"]
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.anyio
async def test_slow_request_is_created_after_the_client_gives_up(caplog: pytest.LogCaptureFixture) -> None:
    """A stalled request outlives the client's timeout; a retry meanwhile gets 409, a later one replays."""
    async with serving(FaultConfig(p_slow=1.0, slow_s=0.5)) as (server, session):
        with pytest.raises(TimeoutError):
            await upload(session, server, key="k1", give_up_after=0.2)
        assert (await upload(session, server, key="k1"))[0] == 409
        await anyio.sleep(0.5)
        replay = await upload(session, server, key="k1")
    assert (replay[0], replay[2]["Idempotent-Replayed"]) == (201, "true")
    assert (server.ledger.created, server.ledger.conflicts_409) == (1, 1)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.anyio
async def test_token_bucket_answers_429_past_the_rate() -> None:
    """Past the bucket's burst, requests faster than its rate get 429 with the time until a token frees."""
    async with serving(FaultConfig(bucket_rate=1.0, bucket_burst=2)) as (server, session):
        answers = [await upload(session, server) for _ in range(6)]
    statuses = [a[0] for a in answers]
    assert statuses[:2] == [201, 201]
    assert statuses.count(429) >= 3
    assert all(a[2]["Retry-After"] == "1" for a in answers if a[0] == 429)


def test_token_bucket_on_a_fake_clock() -> None:
    """The bucket starts full, refills at its rate, and reports the exact wait until the next token."""
    bucket = TokenBucket(rate=2.0, burst=2, now=0.0)
    assert [bucket.take(0.0), bucket.take(0.0), bucket.take(0.0)] == [0.0, 0.0, 0.5]
    assert bucket.take(0.25) == 0.25
    assert bucket.take(0.5) == 0.0
    assert bucket.take(10.0) == 0.0  # idle time refills up to the burst, not beyond
    assert bucket.take(10.0) == 0.0
    assert bucket.take(10.0) == 0.5


@pytest.mark.anyio
async def test_latency_fault_delays_the_answer() -> None:
    """``p_latency`` adds a delay drawn between ``latency_min_s`` and ``latency_max_s``."""
    config = FaultConfig(p_latency=1.0, latency_min_s=0.2, latency_max_s=0.25)
    async with serving(config) as (server, session):
        started = time.monotonic()
        status, _, _ = await upload(session, server)
    assert status == 201
    assert 0.2 <= time.monotonic() - started < 5.0  # the drawn delay (loose above: a loaded machine)


def test_fault_config_rejects_impossible_values() -> None:
    """Probabilities outside 0..1, an inverted latency range and unknown fields are configuration errors."""
    for bad in ({"p_429": 1.5}, {"latency_min_s": 2.0, "latency_max_s": 1.0}, {"p_43": 0.1}):
        with pytest.raises(ValidationError):
            FaultConfig.model_validate(bad)


# --- ledger and admin -------------------------------------------------------------------------------------


def test_ledger_peak_rate_over_a_sliding_second() -> None:
    """The peak counts arrivals in the busiest sliding one-second window, not in calendar seconds."""
    ledger = Ledger()
    for t in (100.0, 100.5, 100.9, 101.2, 101.3, 102.5):
        ledger.record_arrival(t)
    stats = ledger.stats()
    assert (stats["max_requests_in_any_1s"], stats["first_1s_requests"]) == (4, 3)
    assert Ledger().stats()["max_requests_in_any_1s"] == 0


@pytest.mark.anyio
async def test_admin_endpoints_report_and_reset_the_ledger() -> None:
    """``/_admin/stats`` is ``Ledger.stats()``, ``/_admin/assets`` lists keys and hashes, reset clears all."""
    async with serving() as (server, session):
        for n in range(3):
            await upload(session, server, {**BODY, "url": f"https://x.test/{n}.png"}, key=f"k{n}")
        await upload(session, server, {**BODY, "url": "https://x.test/0.png"}, key="k0")
        async with session.get(f"{server.admin_url}/stats") as r:
            stats = await r.json()
        async with session.get(f"{server.admin_url}/assets") as r:
            assets = await r.json()
        assert stats == server.ledger.stats()
        async with session.post(f"{server.admin_url}/reset") as r:
            assert r.status == 204
        fresh = await upload(session, server, {**BODY, "url": "https://x.test/0.png"}, key="k0")
    assert stats["requests"] == 4 and stats["by_status"] == {"201": 4}
    assert (stats["created"], stats["replayed"], stats["keys"], stats["duplicate_bodies"]) == (3, 1, 3, 0)
    assert stats["max_requests_in_any_1s"] == stats["first_1s_requests"] == 4
    assert [a["idempotency_key"] for a in assets] == ["k0", "k1", "k2"]
    assert assets[0]["body_sha256"] == body_sha256({**BODY, "url": "https://x.test/0.png"})
    assert "Idempotent-Replayed" not in fresh[2]
    assert (server.ledger.requests, server.ledger.created) == (1, 1)


# --- profiles and the public surface ----------------------------------------------------------------------


def test_every_profile_loads() -> None:
    """Every shipped profile parses into a FaultConfig, and each has the faults its name promises."""
    assert set(available_profiles()) >= {"none", "demo", "flaky", "throttle", "revoked", "slow"}
    profiles = {name: load_profile(name) for name in available_profiles()}
    assert profiles["none"] == FaultConfig()
    assert profiles["flaky"].slow_s > 2.0
    assert profiles["throttle"].bucket_rate == 50.0
    assert profiles["revoked"].revoke_after == 200
    assert profiles["slow"].base_latency_s == 0.1


def test_repo_profiles_are_copies_of_the_packaged_ones() -> None:
    """``configs/faults`` and the packaged ``ingest/data/faults`` hold the same files, byte for byte."""
    packaged = {f.name: f.read_bytes() for f in packaged_profiles_dir().iterdir() if f.name.endswith(".toml")}
    repo = {p.name: p.read_bytes() for p in (REPO_ROOT / "configs" / "faults").glob("*.toml")}
    assert packaged and packaged == repo
    assert all(raw.startswith(b"#") for raw in packaged.values())


def test_profile_by_path_and_unknown_name(tmp_path: Path) -> None:
    """A path to a .toml loads that file; an unknown name is a ValueError listing the known profiles."""
    custom = tmp_path / "mine.toml"
    custom.write_text("p_5xx = 0.5\nseed = 9\n")
    assert load_profile(str(custom)) == FaultConfig(p_5xx=0.5, seed=9)
    with pytest.raises(ValueError, match="flaky"):
        load_profile("no-such-profile")
    custom.write_text("p_5xx = 5\n")
    with pytest.raises(ValueError, match=r"mine\.toml"):
        load_profile(str(custom))


@pytest.mark.anyio
async def test_serve_forever_listens_until_cancelled() -> None:
    """``serve_forever`` reports the server once it listens and stops when its task is cancelled."""
    ready: list[FakeServer] = []
    listening = anyio.Event()

    def on_ready(server: FakeServer) -> None:
        ready.append(server)
        listening.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: serve_forever(FakeServerConfig(), on_ready=on_ready))
            await listening.wait()
            async with aiohttp.ClientSession() as session:
                status, _, _ = await upload(session, ready[0])
            tg.cancel_scope.cancel()
    assert status == 201
    assert ready[0].url.startswith("http://127.0.0.1:") and ready[0].url.endswith("/v1")


def test_all_is_complete() -> None:
    """``ingest.fakeserver.__all__`` names every public object the package exports, and only those."""
    public = {
        name
        for name, value in vars(ingest.fakeserver).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert set(ingest.fakeserver.__all__) == public
