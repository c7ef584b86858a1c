"""The HTTP edge: one ``aiohttp.ClientSession`` per run, one ``upload()`` per attempt.

``upload()`` never raises for an HTTP or transport problem: it returns an ``AttemptResult`` that the consumer feeds
to ``ingest.upload.retry``. Response bodies are read with a size cap, error bodies that are not the spec's envelope (an
empty body or a proxy's HTML page) become a synthetic error, and a 201 is validated against ``ingest.models.Asset``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pydantic
import structlog

from ingest.credentials import ApiKey
from ingest.models import ErrorEnvelope, UploadResponse
from ingest.settings import default
from ingest.upload.retry import server_wait
from ingest.version import __version__

UPLOAD_PATH = "/assets/uploads"
PROBE_BODY = b"{}"  # valid JSON, not a valid upload: answered 400/422, creates nothing
USER_AGENT = f"ingest/{__version__}"

log = structlog.get_logger("ingest.upload.client")


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why an attempt did not succeed, as recorded in the results file."""

    type: str
    message: str
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """One attempt's outcome. ``status`` is ``None`` when no HTTP answer arrived."""

    status: int | None
    asset: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    server_wait: float | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """Connection settings for one run."""

    base_url: str
    concurrency: int
    connect_timeout: float = default("connect_timeout")
    request_timeout: float = default("request_timeout")
    max_response_bytes: int = default("max_response_bytes")
    max_server_wait: float = default("max_server_wait")


class ResponseTooLarge(Exception):
    """The response body exceeded ``max_response_bytes``."""


@asynccontextmanager
async def open_session(options: ClientOptions) -> AsyncIterator[aiohttp.ClientSession]:
    """The run's single session: connection pool sized to the concurrency, connect and total timeouts."""
    connector = aiohttp.TCPConnector(limit=options.concurrency, limit_per_host=options.concurrency, ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(total=options.request_timeout, connect=options.connect_timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, raise_for_status=False) as session:
        yield session


class AssetsClient:
    """Sends ``POST {base_url}/assets/uploads``; see the module docstring."""

    def __init__(self, session: aiohttp.ClientSession, api_key: ApiKey, options: ClientOptions) -> None:
        self._session = session  # shared by every consumer of the run
        self._options = options
        self.url = options.base_url.rstrip("/") + UPLOAD_PATH  # the one endpoint this client talks to
        # A server or proxy that echoes the Authorization header must not get the key into our records.
        self._secrets = [part.encode() for part in api_key.parts()]
        self._headers = {  # built once; the per-attempt copy only adds the idempotency key
            "Authorization": api_key.header(),
            "User-Agent": USER_AGENT,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }

    def __repr__(self) -> str:
        return f"AssetsClient(url={self.url!r})"

    async def upload(self, body: bytes, key: str) -> AttemptResult:
        """One attempt with ``Idempotency-Key: key``; see ``AttemptResult``."""
        return await self._post(body, {**self._headers, "Idempotency-Key": key})

    async def probe(self) -> AttemptResult:
        """One request that cannot create anything: an empty JSON body, no idempotency key. The API answers it
        400/422 when the endpoint and the key are right (``ingest.upload.preflight`` reads the answer)."""
        return await self._post(PROBE_BODY, self._headers)

    async def _post(self, body: bytes, headers: dict[str, str]) -> AttemptResult:
        try:
            async with self._session.post(self.url, data=body, headers=headers, allow_redirects=False) as resp:
                payload = self._mask(await _read_capped(resp, self._options.max_response_bytes))
                return self._interpret(resp, payload)
        except TimeoutError:
            return AttemptResult(None, error=ErrorInfo("timeout", "no response within the request timeout"))
        except ResponseTooLarge:
            limit = self._options.max_response_bytes
            return AttemptResult(None, error=ErrorInfo("bad_response", f"response body larger than {limit} bytes"))
        except aiohttp.ClientSSLError as exc:
            return AttemptResult(None, error=ErrorInfo("tls_error", _describe(exc)))
        except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError) as exc:
            return AttemptResult(None, error=ErrorInfo("connection_error", _describe(exc)))

    def _mask(self, payload: bytes) -> bytes:
        """``payload`` with every part of the key replaced by ``***`` (a C-speed search; usually a no-op)."""
        for secret in self._secrets:
            if secret in payload:
                payload = payload.replace(secret, b"***")
        return payload

    def _interpret(self, resp: aiohttp.ClientResponse, payload: bytes) -> AttemptResult:
        request_id = resp.headers.get("x-request-id")
        if resp.status == 201:
            return _success(payload, request_id)
        wait = server_wait(resp.headers, now=time.time(), max_wait=self._options.max_server_wait)
        error = _error_info(resp.status, resp.reason, payload, request_id)
        return AttemptResult(resp.status, error=error, server_wait=wait, request_id=error.request_id)


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    if resp.content_length is not None and resp.content_length > limit:
        raise ResponseTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise ResponseTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _success(payload: bytes, request_id: str | None) -> AttemptResult:
    try:
        request_id = UploadResponse.model_validate_json(payload).asset.request_id or request_id
    except pydantic.ValidationError as exc:
        # The server says it created the asset; believe the status, keep what it sent, and say so.
        log.warning("upload.unexpected_response", request_id=request_id, problem=str(exc.errors()[0]["msg"]))
        raw = _loads(payload)
        asset_raw = raw.get("asset") if isinstance(raw, dict) else None
        return AttemptResult(201, asset=asset_raw if isinstance(asset_raw, dict) else {}, request_id=request_id)
    # Validated above; recorded exactly as the server sent it (extra fields included), without a re-dump.
    return AttemptResult(201, asset=orjson.loads(payload)["asset"], request_id=request_id)


def _error_info(status: int, reason: str | None, payload: bytes, request_id: str | None) -> ErrorInfo:
    try:
        envelope = ErrorEnvelope.model_validate_json(payload).error
    except pydantic.ValidationError:
        snippet = payload[:200].decode("utf-8", "replace").strip()
        message = f"HTTP {status} {reason or ''}".strip() + (f": {snippet}" if snippet else " (empty body)")
        return ErrorInfo(_fallback_type(status), message, request_id)
    return ErrorInfo(envelope.type, envelope.message, envelope.request_id or request_id)


def _fallback_type(status: int) -> str:
    if status in (401, 403):
        return "authorization_error"
    if status == 404:
        return "not_found"
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "server_error"
    return "validation_error"


def _loads(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text
