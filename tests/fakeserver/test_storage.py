"""The embedded fake of fal's storage API: tokens, single and multipart uploads, files served back, faults, strictness.

Every test talks to a real server on 127.0.0.1 through a real ``aiohttp.ClientSession``.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from ingest.fakeserver import FakeServer, FakeServerConfig, StorageConfig, running_fake_server

KEY = {"Authorization": "Key fake-key"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _token(session: aiohttp.ClientSession, server: FakeServer) -> dict[str, Any]:
    url = f"{server.storage_url}/storage/auth/token?storage_type=fal-cdn-v3"
    async with session.post(url, headers=KEY, json={}) as resp:
        assert resp.status == 200
        return dict(await resp.json())


def _bearer(token: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"{token['token_type']} {token['token']}"}


async def _get_bytes(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.get(url) as resp:
        assert resp.status == 200
        return await resp.read()


@pytest.mark.anyio
async def test_single_upload_round_trips_the_bytes() -> None:
    """A token from the key, a single upload with the token, and GET of its access_url give the same bytes back."""
    body = b"\x89PNG" + bytes(range(256)) * 40
    async with running_fake_server() as server, aiohttp.ClientSession() as session:
        token = await _token(session, server)
        assert token["base_url"] == server.storage_url and token["token_type"] == "Bearer"
        assert token["expires_at"].endswith("+00:00")
        headers = {**_bearer(token), "Content-Type": "image/png", "X-Fal-File-Name": "cat.png"}
        async with session.post(f"{token['base_url']}/files/upload", data=body, headers=headers) as resp:
            assert resp.status == 200
            url = (await resp.json())["access_url"]
        assert url.endswith("/cat.png")
        assert await _get_bytes(session, url) == body
        assert server.storage is not None and server.storage.issued(url)
        stats = server.storage.ledger.stats(len(server.storage.blobs.files))
        assert stats["single_uploads"] == 1 and stats["tokens_issued"] == 1 and stats["files"] == 1


@pytest.mark.anyio
async def test_transfer_window_spans_the_uploads_and_resets_when_asked() -> None:
    """The stats' transfer window runs from the first upload request to the last answer; reset_window=1 clears it."""
    async with running_fake_server() as server, aiohttp.ClientSession() as session:
        stats_url = f"{server.admin_url}/storage/stats"
        token = await _token(session, server)
        async with session.get(stats_url) as resp:
            assert (await resp.json())["window"] == {"start": None, "end": None}  # a token is not an upload
        headers = {**_bearer(token), "Content-Type": "video/mp4"}
        before = time.monotonic()
        for _ in range(2):
            async with session.post(f"{server.storage_url}/files/upload", data=b"x" * 1000, headers=headers) as resp:
                assert resp.status == 200
        after = time.monotonic()
        async with session.get(stats_url + "?reset_window=1") as resp:
            window = (await resp.json())["window"]
        assert before <= window["start"] < window["end"] <= after
        async with session.get(stats_url) as resp:
            assert (await resp.json())["window"] == {"start": None, "end": None}


@pytest.mark.anyio
async def test_refusals_wrong_key_no_token_no_length_expired_token() -> None:
    """A wrong key gets 401 for a token; no token 401; a chunked body 411; a token past its TTL 401."""

    async def chunked() -> AsyncIterator[bytes]:
        yield b"abc"

    config = FakeServerConfig(storage=StorageConfig(token_ttl_s=0.2))
    async with running_fake_server(config) as server, aiohttp.ClientSession() as session:
        url = f"{server.storage_url}/storage/auth/token?storage_type=fal-cdn-v3"
        async with session.post(url, headers={"Authorization": "Key nope"}, json={}) as resp:
            assert resp.status == 401
        upload = f"{server.storage_url}/files/upload"
        async with session.post(upload, data=b"abc") as resp:
            assert resp.status == 401
        token = await _token(session, server)
        async with session.post(upload, data=chunked(), headers=_bearer(token)) as resp:
            assert resp.status == 411
        await asyncio.sleep(0.3)
        async with session.post(upload, data=b"abc", headers=_bearer(token)) as resp:
            assert resp.status == 401
            assert (await resp.json())["detail"] == "Token expired"


@pytest.mark.anyio
async def test_multipart_parts_in_any_order_then_unknown_upload_id() -> None:
    """Parts sent and listed out of order assemble in part order; a forgotten uploadId is a 404."""
    parts = [bytes([n]) * 1000 for n in range(1, 4)]
    async with running_fake_server() as server, aiohttp.ClientSession() as session:
        token = await _token(session, server)
        headers = {**_bearer(token), "Content-Type": "video/mp4", "X-Fal-File-Name": "big.mp4"}
        async with session.post(f"{server.storage_url}/files/upload/multipart", headers=headers) as resp:
            started = await resp.json()
        access, upload_id = started["access_url"], started["uploadId"]
        etags = {}
        for number in (3, 1, 2):
            part_url = f"{access}/multipart/{upload_id}/{number}"
            async with session.put(part_url, data=parts[number - 1], headers=_bearer(token)) as resp:
                assert resp.status == 200
                etags[number] = resp.headers["ETag"]
        listed = [{"partNumber": n, "etag": etags[n]} for n in (2, 3, 1)]
        complete = f"{access}/multipart/{upload_id}/complete"
        async with session.post(complete, json={"parts": listed}, headers=_bearer(token)) as resp:
            assert resp.status == 200
            assert (await resp.json())["access_url"] == access
        assert await _get_bytes(session, access) == b"".join(parts)
        async with session.get(f"{server.admin_url}/storage/files") as resp:
            (stored,) = await resp.json()  # hashed when asked for: complete does not read the parts back
        assert (stored["access_url"], stored["size"]) == (access, 3000)
        assert stored["sha256"] == hashlib.sha256(b"".join(parts)).hexdigest()
        async with session.post(complete, json={"parts": listed}, headers=_bearer(token)) as resp:
            assert resp.status == 404


@pytest.mark.anyio
async def test_forget_makes_pending_upload_ids_unknown() -> None:
    """``POST /_admin/storage/forget`` turns every pending uploadId into a 404 for its parts."""
    async with running_fake_server() as server, aiohttp.ClientSession() as session:
        token = await _token(session, server)
        async with session.post(f"{server.storage_url}/files/upload/multipart", headers=_bearer(token)) as resp:
            started = await resp.json()
        async with session.post(f"{server.admin_url}/storage/forget") as resp:
            assert resp.status == 204
        part_url = f"{started['access_url']}/multipart/{started['uploadId']}/1"
        async with session.put(part_url, data=b"x", headers=_bearer(token)) as resp:
            assert resp.status == 404


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("fault", "status", "html"),
    [("p_429", 429, False), ("p_503", 503, False), ("p_502_ingress", 502, True)],
)
async def test_gateway_faults(fault: str, status: int, html: bool) -> None:
    """Each gateway fault answers its status (the ingress 502 with nginx's HTML page) before doing anything."""
    config = FakeServerConfig(storage=StorageConfig(**{fault: 1.0}))
    async with running_fake_server(config) as server, aiohttp.ClientSession() as session:
        url = f"{server.storage_url}/storage/auth/token?storage_type=fal-cdn-v3"
        async with session.post(url, headers=KEY, json={}) as resp:
            assert resp.status == status
            text = await resp.text()
        assert ("nginx" in text) is html
        assert server.storage is not None and server.storage.ledger.tokens_issued == 0


@pytest.mark.anyio
async def test_part_faults_drop_and_missing_etag() -> None:
    """A dropped part leaves the client with a connection error; a missing-ETag part answers 200 without one."""
    body = b"z" * (4 << 20)
    for fault in ("p_drop_part", "p_missing_etag"):
        config = FakeServerConfig(storage=StorageConfig(**{fault: 1.0}))
        async with running_fake_server(config) as server, aiohttp.ClientSession() as session:
            token = await _token(session, server)
            async with session.post(f"{server.storage_url}/files/upload/multipart", headers=_bearer(token)) as resp:
                started = await resp.json()
            part_url = f"{started['access_url']}/multipart/{started['uploadId']}/1"
            if fault == "p_drop_part":
                with pytest.raises((aiohttp.ClientError, ConnectionError)):
                    async with session.put(part_url, data=io.BytesIO(body), headers=_bearer(token)) as resp:
                        await resp.read()
            else:
                async with session.put(part_url, data=io.BytesIO(body), headers=_bearer(token)) as resp:
                    assert resp.status == 200 and "ETag" not in resp.headers


@pytest.mark.anyio
async def test_strict_urls_reject_foreign_urls_accept_issued_and_fal() -> None:
    """With ``strict_urls`` the Assets API answers 422 for a foreign url, 201 for a stored one and for fal hosts."""
    async with (
        running_fake_server(FakeServerConfig(strict_urls=True)) as server,
        aiohttp.ClientSession() as session,
    ):
        token = await _token(session, server)
        async with session.post(f"{server.storage_url}/files/upload", data=b"abc", headers=_bearer(token)) as resp:
            issued = (await resp.json())["access_url"]
        answers = []
        for url in ("https://example.com/a.png", issued, "https://v3.fal.media/files/x/a.png"):
            body = orjson.dumps({"url": url, "type": "image"})
            headers = {**KEY, "Content-Type": "application/json"}
            async with session.post(f"{server.url}/assets/uploads", data=body, headers=headers) as resp:
                answers.append(resp.status)
        assert answers == [422, 201, 201]
        assert server.ledger.stats()["foreign_urls_422"] == 1
        assert hashlib.sha256(await _get_bytes(session, issued)).hexdigest() == hashlib.sha256(b"abc").hexdigest()
