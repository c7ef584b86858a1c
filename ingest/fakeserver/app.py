"""The fake Assets API as an aiohttp application: ``POST /v1/assets/uploads`` and a few ``/_admin`` endpoints.

An upload request goes through these steps; each may answer early:

1. authenticate: 401 for a missing, malformed or wrong key; 403 once the key is revoked
   (``POST /_admin/revoke``, or more than ``revoke_after`` upload requests received);
2. read and validate the body: 400 if it is not JSON (or over 1 MiB), 422 if it breaks the schema;
3. gateway faults, which create nothing: token bucket and random 429s, random 500/502/503;
4. idempotency: replay the stored 201, or 422 "payload changed", or 409 "in progress", or claim the key;
5. latency and stalls, while holding the claim, so that a concurrent retry meets the 409;
6. create the asset and store its 201 under the key;
7. commit-then-fail: answer 500, or drop the connection, although the asset exists.

Admin endpoints (no auth): ``GET /_admin/stats``, ``GET /_admin/assets``, ``POST /_admin/reset``,
``POST /_admin/revoke``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import time

import orjson
from aiohttp import web

from ingest.fakeserver.assets import build_asset, new_request_id, utc_timestamp
from ingest.fakeserver.config import FakeServerConfig
from ingest.fakeserver.faults import CommitFailure, Faults
from ingest.fakeserver.idempotency import IdempotencyStore, StoredResponse, Verdict
from ingest.fakeserver.ledger import Ledger
from ingest.fakeserver.ratelimit import rate_limit_headers
from ingest.fakeserver.responses import MAX_BODY_BYTES, error_response, is_fal_host, json_response, read_upload
from ingest.fakeserver.storage import FakeStorage, add_storage_routes
from ingest.models import UploadRequest

UPLOADS_PATH = "/v1/assets/uploads"
ADMIN_PATH = "/_admin"
DEFAULT_QUOTA = 10  # the per-second quota the rate-limit headers announce when no token bucket is set

SERVER_ERROR_MESSAGES = {
    500: "An unexpected error occurred",
    502: "Upstream asset service failed",
    503: "Service temporarily unavailable",
}


class FakeAssetsApi:
    """The state and handlers of one fake server: its ledger, idempotency store, faults and revocation."""

    def __init__(self, config: FakeServerConfig, storage: FakeStorage | None = None) -> None:
        self.config = config
        self.storage = storage  # the storage on the same origin, for the strict url check
        self.ledger = Ledger()
        self.store = IdempotencyStore(ttl_s=config.idempotency_ttl_s)
        self.faults = Faults(config.faults)
        self.revoked = False  # the API key was revoked: every upload gets a 403
        self._api_key = config.api_key.encode()
        rate = config.faults.bucket_rate  # the per-second quota announced in rate-limit headers:
        self._quota = DEFAULT_QUOTA if rate is None else max(1, round(rate))

    async def upload(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/assets/uploads``."""
        request_id = new_request_id()
        number = self.ledger.record_arrival(time.monotonic())
        answer = self._authenticate(request, request_id, number)
        if answer is None:
            answer = await self._answer(request, request_id)
        if answer is None:
            # The connection was dropped on purpose: aiohttp quietly fails to write this to the closed socket.
            return web.Response(status=500)
        self.ledger.record_answer(answer.status)
        answer.headers.update(self.faults.quota_headers(quota=self._quota))  # none unless quota_headers is set
        return answer

    def _authenticate(self, request: web.Request, request_id: str, number: int) -> web.Response | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "key" or not token:
            return self._refuse(401, "Authentication required", request_id)
        if not hmac.compare_digest(token.encode("utf-8", "surrogateescape"), self._api_key):
            return self._refuse(401, "Invalid API key", request_id)
        revoke_after = self.config.faults.revoke_after
        if revoke_after is not None and number > revoke_after:
            self.revoked = True
        if self.revoked:
            return self._refuse(403, "Access denied: key revoked", request_id)
        return None

    def _refuse(self, status: int, message: str, request_id: str) -> web.Response:
        self.ledger.record_auth_failure()
        return error_response(status, "authorization_error", message, request_id)

    async def _answer(self, request: web.Request, request_id: str) -> web.Response | None:
        upload = await read_upload(request, request_id)
        if isinstance(upload, web.Response):
            return upload
        refusal = self._strict_url(upload.url, request_id) or self._gateway_fault(request_id)
        if refusal is not None:
            return refusal
        body_sha256 = hashlib.sha256(upload.body_bytes()).hexdigest()
        key = request.headers.get("Idempotency-Key") or None  # an empty header is no key
        if key is None:
            return await self._create(request, request_id, upload, key=None, body_sha256=body_sha256)
        return await self._create_once(request, request_id, upload, key=key, body_sha256=body_sha256)

    def _strict_url(self, url: str, request_id: str) -> web.Response | None:
        if not self.config.strict_urls or is_fal_host(url):
            return None
        if self.storage is not None and self.storage.issued(url):
            return None
        self.ledger.foreign_urls_422 += 1
        message = f"url: {url!r} was not issued by fal storage and is not on a fal host"
        return error_response(422, "validation_error", message, request_id)

    def _gateway_fault(self, request_id: str) -> web.Response | None:
        wait = self.faults.throttle()
        if wait is not None:
            hint = self.config.faults.rate_limit_hint
            headers = rate_limit_headers(hint, wait, quota=self._quota, now=time.time())
            return error_response(429, "rate_limited", "Rate limit exceeded", request_id, headers)
        status = self.faults.server_error()
        if status is not None:
            message = SERVER_ERROR_MESSAGES[status]
            return error_response(status, "server_error", message, request_id, self._unavailable_hint(status))
        return None

    def _unavailable_hint(self, status: int) -> dict[str, str] | None:
        # RFC 9110 section 15.6.4: a 503 may say when to come back.
        return {"Retry-After": str(math.ceil(self.config.faults.retry_after_s))} if status == 503 else None

    async def _create_once(
        self, request: web.Request, request_id: str, upload: UploadRequest, *, key: str, body_sha256: str
    ) -> web.Response | None:
        verdict = self.store.begin(key, body_sha256, now=time.monotonic())
        if isinstance(verdict, StoredResponse):
            self.ledger.replayed += 1
            return json_response(verdict.status, verdict.body, request_id, {"Idempotent-Replayed": "true"})
        if verdict is Verdict.PAYLOAD_CHANGED:
            self.ledger.payload_changed_422 += 1
            message = "payload changed: this idempotency key was already used with a different request body"
            return error_response(422, "validation_error", message, request_id)
        if verdict is Verdict.IN_PROGRESS:
            self.ledger.conflicts_409 += 1
            message = "request with this idempotency key is in progress"
            return error_response(409, "validation_error", message, request_id)
        try:
            return await self._create(request, request_id, upload, key=key, body_sha256=body_sha256)
        finally:
            self.store.release(key)  # no-op after a commit; frees the key if the attempt was cancelled

    async def _create(
        self,
        request: web.Request,
        request_id: str,
        upload: UploadRequest,
        *,
        key: str | None,
        body_sha256: str,
    ) -> web.Response | None:
        # Draw all of this request's faults before sleeping, so a sequential client sees the seeded sequence.
        delay, stall, failure = self.faults.delay(), self.faults.slow(), self.faults.commit_failure()
        await _sleep(delay + stall)
        asset = build_asset(upload, request_id=request_id, created_at=utc_timestamp())
        body = orjson.dumps({"asset": asset})
        self.ledger.record_created(asset, key=key, body_sha256=body_sha256)
        if key is not None:
            self.store.commit(key, StoredResponse(body_sha256, 201, body, stored_at=time.monotonic()))
        return self._after_commit(request, request_id, body, failure)

    def _after_commit(
        self, request: web.Request, request_id: str, body: bytes, failure: CommitFailure | None
    ) -> web.Response | None:
        match failure:
            case None:
                return json_response(201, body, request_id)
            case "error":
                return error_response(500, "server_error", SERVER_ERROR_MESSAGES[500], request_id)
            case "drop":
                self.ledger.dropped += 1
                if request.transport is not None:
                    request.transport.close()
                return None

    async def admin_stats(self, request: web.Request) -> web.Response:
        """``GET /_admin/stats``: ``Ledger.stats()``."""
        return web.Response(body=orjson.dumps(self.ledger.stats()), content_type="application/json")

    async def admin_assets(self, request: web.Request) -> web.Response:
        """``GET /_admin/assets``: every created asset with its idempotency key and body hash."""
        return web.Response(body=orjson.dumps(self.ledger.assets), content_type="application/json")

    async def admin_reset(self, request: web.Request) -> web.Response:
        """``POST /_admin/reset``: forget everything, as if the server had just started."""
        self.ledger.reset()
        if self.storage is not None:
            self.storage.blobs.clear()
        self.store.clear()
        self.faults.reset()
        self.revoked = False
        return web.Response(status=204)

    async def admin_revoke(self, request: web.Request) -> web.Response:
        """``POST /_admin/revoke``: revoke the API key now."""
        self.revoked = True
        return web.Response(status=204)

    def __repr__(self) -> str:
        return f"FakeAssetsApi({self.ledger!r}, {self.store!r}, {self.faults!r}, revoked={self.revoked})"


FAKE_API = web.AppKey("fake_assets_api", FakeAssetsApi)
FAKE_STORAGE = web.AppKey("fake_storage", FakeStorage)


def create_app(config: FakeServerConfig) -> web.Application:
    """The aiohttp application of a fake Assets API and storage set up by ``config``; their state is
    ``app[FAKE_API]`` and ``app[FAKE_STORAGE]``; the storage's spilled bytes are removed at cleanup."""
    storage = FakeStorage(config.storage, api_key=config.api_key)
    api = FakeAssetsApi(config, storage)
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[FAKE_API] = api
    app[FAKE_STORAGE] = storage
    add_storage_routes(app, storage, ADMIN_PATH)

    async def _remove_spilled(_: web.Application) -> None:
        storage.blobs.close()

    app.on_cleanup.append(_remove_spilled)
    app.router.add_post(UPLOADS_PATH, api.upload)
    app.router.add_get(f"{ADMIN_PATH}/stats", api.admin_stats)
    app.router.add_get(f"{ADMIN_PATH}/assets", api.admin_assets)
    app.router.add_post(f"{ADMIN_PATH}/reset", api.admin_reset)
    app.router.add_post(f"{ADMIN_PATH}/revoke", api.admin_revoke)
    return app


async def _sleep(seconds: float) -> None:
    if seconds > 0.0:
        await asyncio.sleep(seconds)
