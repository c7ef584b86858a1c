"""A fake of fal's storage API, as fal-client 1.0.3 and fal-js ``cdn.ts`` use it, served at the server's root.

| request | answer |
| --- | --- |
| ``POST /storage/auth/token?storage_type=fal-cdn-v3``, ``Key …`` | ``{token, token_type, base_url, expires_at}`` |
| ``POST /files/upload``, ``Bearer <token>``, ``Content-Length``, ``X-Fal-File-Name`` | ``{access_url}`` |
| ``POST /files/upload/multipart`` | ``{access_url, uploadId}`` |
| ``PUT {access_url}/multipart/{uploadId}/{n}``, ``Content-Length`` | 200 with the part's ``ETag`` |
| ``POST {access_url}/multipart/{uploadId}/complete``, ``{"parts": [{"partNumber", "etag"}]}`` | ``{access_url}`` |
| ``GET {access_url}`` | the stored bytes |

Parts may arrive, and be listed in ``complete``, in any order.

``base_url`` is the server's own origin, so the Assets API (``/v1``) and the storage share one port. A token is
accepted until ``token_ttl_s`` after it was issued; then 401. A body without ``Content-Length`` gets a 411. An
unknown ``uploadId`` gets a 404. Faults (``StorageConfig``): 429 and 503 with ``Retry-After``, an ingress-style 502
(nginx's HTML page), a part's connection closed halfway through its body, a part answered without an ``ETag``.
Admin: ``GET /_admin/storage/stats`` (``?reset_window=1`` starts a new transfer window once read), ``GET
/_admin/storage/files``, ``POST /_admin/storage/forget`` (every pending
``uploadId`` becomes unknown).
"""

from __future__ import annotations

import hashlib
import hmac
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import anyio
import orjson
from aiohttp import web

from ingest.fakeserver.blobs import BlobStore, PendingUpload, StorageLedger, StoredFile
from ingest.fakeserver.config import StorageConfig

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
READ_CHUNK = 1 << 20
INGRESS_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>"
    b"\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


class FakeStorage:
    """The state and handlers of the fake storage API; see the module docstring."""

    def __init__(self, config: StorageConfig, *, api_key: str) -> None:
        self.config = config
        self.ledger = StorageLedger()
        self.blobs = BlobStore(config.spill_dir)
        self._api_key = api_key.encode()  # the fal key the token endpoint accepts
        self._rng = random.Random(config.seed)  # the only source of the storage's randomness

    def issued(self, url: str) -> bool:
        """Whether ``url`` is the access url of a file this storage holds."""
        return url in self.blobs.by_url

    # -- handlers ---------------------------------------------------------------------------------------------

    async def token(self, request: web.Request) -> web.StreamResponse:
        """``POST /storage/auth/token``."""
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "key" or not hmac.compare_digest(key.encode("utf-8", "surrogateescape"), self._api_key):
            return self._error(401, "Invalid API key")
        if request.query.get("storage_type") != "fal-cdn-v3":
            return self._error(400, "storage_type must be fal-cdn-v3")
        if (fault := self._gateway_fault()) is not None:
            return fault
        await request.read()
        now = time.time()
        token = self.blobs.new_id() + self.blobs.new_id()
        self.blobs.tokens[token] = now + self.config.token_ttl_s
        self.ledger.tokens_issued += 1
        body = {
            "token": token,
            "token_type": "Bearer",
            "base_url": str(request.url.origin()),
            "created_at": _iso(now),
            "expires_at": _iso(now + self.config.token_ttl_s),
        }
        return self._json(200, body)

    async def upload(self, request: web.Request) -> web.StreamResponse:
        """``POST /files/upload``: the whole file in one body."""
        if (refusal := self._check(request, needs_length=True)) is not None:
            return refusal
        file_id = self.blobs.new_id()
        scratch = self.blobs.scratch(file_id)
        received = await self._receive(request, scratch, drop=False)
        if received is None:
            return web.Response(status=500)
        size, sha256 = received
        final = self.blobs.root / file_id
        scratch.replace(final)
        name, content_type = _file_name(request), request.content_type
        url = f"{request.url.origin()}/files/{file_id}/{quote(name)}"
        self.blobs.add_file(StoredFile(file_id, name, content_type, (final,), size, sha256, url))
        self.ledger.single_uploads += 1
        return self._json(200, {"access_url": url})

    async def start(self, request: web.Request) -> web.StreamResponse:
        """``POST /files/upload/multipart``."""
        if (refusal := self._check(request, needs_length=False)) is not None:
            return refusal
        await request.read()
        file_id, upload_id = self.blobs.new_id(), self.blobs.new_id()
        name = _file_name(request)
        url = f"{request.url.origin()}/files/{file_id}/{quote(name)}"
        self.blobs.pending[upload_id] = PendingUpload(upload_id, file_id, name, request.content_type, url)
        self.ledger.multipart_started += 1
        return self._json(200, {"access_url": url, "uploadId": upload_id})

    async def part(self, request: web.Request) -> web.StreamResponse:
        """``PUT {access_url}/multipart/{uploadId}/{n}``."""
        if (refusal := self._check(request, needs_length=True)) is not None:
            return refusal
        upload = self._pending(request)
        number = _part_number(request.match_info["part"])
        if upload is None or number is None:
            return self._error(404, "unknown upload or part")
        scratch = self.blobs.scratch(f"{upload.upload_id}-{number}")
        received = await self._receive(request, scratch, drop=self._hit(self.config.p_drop_part))
        if received is None:
            return web.Response(status=500)  # the connection is closed: this answer is never written
        etag = f'"{received[1][:32]}"'  # opaque to clients; S3 uses the md5, 2.5 times slower to hash than sha256
        upload.parts[number] = (scratch, etag)  # a part sent again replaces the earlier one, as in S3
        self.ledger.parts_received += 1
        if self._hit(self.config.p_missing_etag):
            return self._answer(web.Response(status=200))
        return self._answer(web.Response(status=200, headers={"ETag": etag}))

    async def complete(self, request: web.Request) -> web.StreamResponse:
        """``POST {access_url}/multipart/{uploadId}/complete``."""
        if (refusal := self._check(request, needs_length=False)) is not None:
            return refusal
        upload = self._pending(request)
        if upload is None:
            return self._error(404, "unknown upload")
        try:
            listed = orjson.loads(await request.read())["parts"]
            parts = {int(p["partNumber"]): str(p["etag"]) for p in listed}
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return self._error(400, 'body must be {"parts": [{"partNumber": n, "etag": "..."}]}')
        order = sorted(parts)
        if not order or order != list(range(1, len(order) + 1)) or set(order) != set(upload.parts):
            return self._error(400, f"parts {order} do not match the parts received {sorted(upload.parts)}")
        if any(upload.parts[n][1] != parts[n] for n in order):
            return self._error(400, "an etag does not match its part")
        del self.blobs.pending[upload.upload_id]
        stored = self.blobs.assemble(upload, order)  # a stat per part: the bytes are hashed when first asked for
        self.blobs.add_file(stored)
        self.ledger.completed += 1
        return self._json(200, {"access_url": stored.access_url})

    async def serve_file(self, request: web.Request) -> web.StreamResponse:
        """``GET {access_url}``."""
        stored = self.blobs.files.get(request.match_info["file_id"])
        if stored is None:
            raise web.HTTPNotFound()
        if len(stored.segments) == 1:
            return web.FileResponse(stored.segments[0], headers={"Content-Type": stored.content_type})
        response = web.StreamResponse(headers={"Content-Type": stored.content_type})
        response.content_length = stored.size
        await response.prepare(request)
        for segment in stored.segments:
            with open(segment, "rb") as part:  # noqa: ASYNC230 (the page cache, as _receive's writes)
                while chunk := part.read(READ_CHUNK):
                    await response.write(chunk)
        await response.write_eof()
        return response

    async def admin_stats(self, request: web.Request) -> web.Response:
        """``GET /_admin/storage/stats``; ``?reset_window=1`` then starts a new transfer window."""
        stats = self.ledger.stats(len(self.blobs.files))
        if request.query.get("reset_window") == "1":
            self.ledger.window_start = self.ledger.window_end = None
        return web.Response(body=orjson.dumps(stats), content_type="application/json")

    async def admin_files(self, request: web.Request) -> web.Response:
        """``GET /_admin/storage/files``: every stored file with its size and sha256."""
        stored_files = list(self.blobs.files.values())
        for stored in stored_files:  # in a worker thread: hashing a 1 GiB file takes a second
            await anyio.to_thread.run_sync(self.blobs.digest, stored)
        files = [stored.public() for stored in stored_files]
        return web.Response(body=orjson.dumps(files), content_type="application/json")

    async def admin_forget(self, request: web.Request) -> web.Response:
        """``POST /_admin/storage/forget``: every multipart upload in progress becomes unknown."""
        self.blobs.forget_pending()
        return web.Response(status=204)

    # -- steps ------------------------------------------------------------------------------------------------

    def _check(self, request: web.Request, *, needs_length: bool) -> web.Response | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        expiry = self.blobs.tokens.get(token)
        if scheme.lower() != "bearer" or expiry is None:
            return self._error(401, "Invalid token")
        if time.time() >= expiry:
            return self._error(401, "Token expired")
        if needs_length and request.content_length is None:
            return self._error(411, "Content-Length required")
        return self._gateway_fault()

    def _gateway_fault(self) -> web.Response | None:
        retry_after = {"Retry-After": str(round(self.config.retry_after_s))}
        if self._hit(self.config.p_429):
            return self._error(429, "Too many requests", retry_after)
        if self._hit(self.config.p_503):
            return self._error(503, "Service unavailable", retry_after)
        if self._hit(self.config.p_502_ingress):
            return self._answer(web.Response(status=502, body=INGRESS_502, content_type="text/html"))
        return None

    def _pending(self, request: web.Request) -> PendingUpload | None:
        upload = self.blobs.pending.get(request.match_info["upload_id"])
        if upload is None or upload.file_id != request.match_info["file_id"]:
            return None
        return upload

    async def _receive(self, request: web.Request, path: Any, *, drop: bool) -> tuple[int, str] | None:
        """Stream the body to ``path``: (size, sha256); ``None`` after dropping the connection on purpose. One digest
        only (a part's ETag is cut from it): hashing is most of the fake's time per byte."""
        hasher, size = hashlib.sha256(), 0
        cut_at = (request.content_length or 0) // 2 if drop else None
        # Plain writes on the loop: the fake's disk is the page cache, and a thread hop per MiB costs more.
        with open(path, "wb") as out:  # noqa: ASYNC230
            async for chunk in request.content.iter_chunked(READ_CHUNK):
                size += len(chunk)
                self.ledger.bytes_received += len(chunk)
                if cut_at is not None and size >= cut_at:
                    self.ledger.parts_dropped += 1
                    if request.transport is not None:
                        request.transport.close()
                    return None
                hasher.update(chunk)
                out.write(chunk)
        return size, hasher.hexdigest()

    def _hit(self, probability: float) -> bool:
        return probability > 0.0 and self._rng.random() < probability

    def _answer(self, response: web.Response) -> web.Response:
        self.ledger.by_status[response.status] += 1
        return response

    def _json(self, status: int, body: dict[str, Any]) -> web.Response:
        return self._answer(web.Response(status=status, body=orjson.dumps(body), content_type="application/json"))

    def _error(self, status: int, detail: str, headers: dict[str, str] | None = None) -> web.Response:
        body = orjson.dumps({"detail": detail})
        return self._answer(web.Response(status=status, body=body, content_type="application/json", headers=headers))

    def __repr__(self) -> str:
        return f"FakeStorage({self.blobs!r}, tokens_issued={self.ledger.tokens_issued})"


def add_storage_routes(app: web.Application, storage: FakeStorage, admin: str) -> None:
    """Route the storage API (at the root) and its admin endpoints."""
    part = "/files/{file_id}/{name}/multipart/{upload_id}"
    app.router.add_post("/storage/auth/token", storage.token)
    app.router.add_post("/files/upload", _timed(storage, storage.upload))
    app.router.add_post("/files/upload/multipart", _timed(storage, storage.start))
    app.router.add_put(part + "/{part}", _timed(storage, storage.part))
    app.router.add_post(part + "/complete", _timed(storage, storage.complete))
    app.router.add_get("/files/{file_id}/{name}", storage.serve_file)
    app.router.add_get(f"{admin}/storage/stats", storage.admin_stats)
    app.router.add_get(f"{admin}/storage/files", storage.admin_files)
    app.router.add_post(f"{admin}/storage/forget", storage.admin_forget)


def _timed(storage: FakeStorage, handler: Handler) -> Handler:
    """``handler``, inside the ledger's transfer window."""

    async def timed(request: web.Request) -> web.StreamResponse:
        storage.ledger.transfer_started(time.monotonic())
        try:
            return await handler(request)
        finally:
            storage.ledger.transfer_answered(time.monotonic())

    return timed


def _file_name(request: web.Request) -> str:
    return request.headers.get("X-Fal-File-Name") or "upload.bin"


def _part_number(raw: str) -> int | None:
    return int(raw) if raw.isdigit() and 1 <= int(raw) <= 10_000 else None


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()
