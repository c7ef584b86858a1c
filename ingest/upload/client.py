"""The HTTP edge: one ``aiohttp.ClientSession`` per run, one ``upload()`` per attempt.

``upload()`` never raises for an HTTP or transport problem: it returns an ``AttemptResult`` that the consumer feeds
to ``ingest.upload.retry``. Response bodies are read with a size cap, error bodies that are not the spec's envelope (an
empty body or a proxy's HTML page) become a synthetic error, and only a 201 whose body validates against
``ingest.models.UploadResponse`` (an asset with at least its ``vector_id``) carries an asset: any other 2xx, or a 201
that is not an asset, is an unknown state (``unexpected_response``), retried with the same key. A redirect is never
followed (the key must not travel to another place) and is recorded as ``redirect`` naming its ``Location``. Every
string kept from an answer (body, ``X-Request-Id``, ``Location``) is masked for the key after decoding
(``ingest.upload.masking``). A certificate that does not verify is ``tls_error``: the run stops (exit 3).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
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
from ingest.models import ErrorEnvelope, UploadResponse, asset_conforms
from ingest.tls import trust
from ingest.upload.masking import SecretMask
from ingest.upload.options import ClientOptions
from ingest.upload.quota import Quota, QuotaReader
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
    replayed: bool = False  # the server says it replayed an earlier answer for this key (Idempotent-Replayed)
    quota: Quota | None = None  # what RateLimit-Policy / RateLimit (or the older trio) announced, if anything


class ResponseTooLarge(Exception):
    """The response body exceeded ``max_response_bytes``."""


@asynccontextmanager
async def open_session(options: ClientOptions) -> AsyncIterator[aiohttp.ClientSession]:
    """The run's single session: connection pool sized to the concurrency, connect and total timeouts."""
    # The system's trust store (honouring SSL_CERT_FILE / SSL_CERT_DIR), or only the CAs of --ca-bundle. ``True`` is
    # aiohttp's own verified default context, made when it was imported (making another one costs ~90 ms of start-up).
    context: ssl.SSLContext | bool = True if options.ca_bundle is None else trust(options.ca_bundle)
    connector = aiohttp.TCPConnector(
        limit=options.concurrency, limit_per_host=options.concurrency, ttl_dns_cache=300, ssl=context
    )
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
        self._mask = SecretMask(api_key.parts())
        self._quota = QuotaReader()  # the server's announced rate policy, read from every answer
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
            async with self._session.post(
                self.url, data=body, headers=headers, allow_redirects=False, proxy=self._options.proxy
            ) as resp:
                payload = self._mask.payload(await _read_capped(resp, self._options.max_response_bytes))
                return self._interpret(resp, payload)
        except TimeoutError:
            return AttemptResult(None, error=ErrorInfo("timeout", "no response within the request timeout"))
        except ResponseTooLarge:
            limit = self._options.max_response_bytes
            return AttemptResult(None, error=ErrorInfo("bad_response", f"response body larger than {limit} bytes"))
        except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
            return AttemptResult(None, error=ErrorInfo("tls_error", self._mask.text(_describe(exc))))
        except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError) as exc:
            return AttemptResult(None, error=ErrorInfo("connection_error", self._mask.text(_describe(exc))))

    def _interpret(self, resp: aiohttp.ClientResponse, payload: bytes) -> AttemptResult:
        request_id = self._mask.optional(resp.headers.get("x-request-id"))
        quota = self._quota.read(resp.headers)
        if resp.status == 201:
            answer = _success(payload, request_id)
            if b"\\" in payload:  # a JSON escape may spell the key: mask the decoded strings too
                asset = self._mask.value(answer.asset) if answer.asset is not None else None
                answer = AttemptResult(201, asset, answer.error, request_id=self._mask.optional(answer.request_id))
            if resp.headers.get("Idempotent-Replayed") == "true":
                answer = dataclasses.replace(answer, replayed=True)
            return answer if quota is None else dataclasses.replace(answer, quota=quota)
        wait = server_wait(resp.headers, now=time.time(), max_wait=self._options.max_server_wait)
        if 300 <= resp.status < 400:
            location = self._mask.text(resp.headers.get("Location", "(no Location)"))
            error = ErrorInfo(
                "redirect", f"HTTP {resp.status} redirect to {location} not followed (check --base-url)", request_id
            )
        elif 200 <= resp.status < 300:
            error = ErrorInfo(
                "unexpected_response", f"HTTP {resp.status} instead of 201: the outcome is unknown", request_id
            )
        else:
            error = _error_info(resp.status, resp.reason, payload, request_id)
            error = ErrorInfo(error.type, self._mask.text(error.message), self._mask.optional(error.request_id))
        return AttemptResult(resp.status, error=error, server_wait=wait, request_id=error.request_id, quota=quota)


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    length = resp.content_length
    if length is not None:
        if length > limit:
            raise ResponseTooLarge
        return await resp.read()  # a stated length within the cap: one read, as aiohttp does it (the common case)
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise ResponseTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _success(payload: bytes, request_id: str | None) -> AttemptResult:
    """A 201 is a success only when its body holds an asset with a ``vector_id``; anything else proves nothing was
    created: an unknown state, retried with the same key. An asset that lacks other fields is kept, with a warning."""
    try:
        raw = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raw = None
    asset = raw.get("asset") if isinstance(raw, dict) else None
    if not isinstance(asset, dict) or not isinstance(asset.get("vector_id"), str) or not asset["vector_id"]:
        shown = "an empty body" if not payload.strip() else f"{payload[:80].decode('utf-8', 'replace')!r}"
        message = f"HTTP 201 without an asset and its vector_id ({shown}): the outcome is unknown"
        log.warning("upload.unexpected_response", status=201, request_id=request_id, problem="no asset.vector_id")
        return AttemptResult(201, error=ErrorInfo("unexpected_response", message, request_id), request_id=request_id)
    if asset_conforms(asset):  # the common case: exactly as the spec says, nothing for the model to find
        return AttemptResult(201, asset=asset, request_id=asset["request_id"] or request_id)
    try:
        request_id = UploadResponse.model_validate(raw).asset.request_id or request_id
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        problem = f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
        log.warning("upload.unexpected_response", status=201, request_id=request_id, problem=problem)
    # Recorded exactly as the server sent it (extra fields included), without a re-dump.
    return AttemptResult(201, asset=asset, request_id=request_id)


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
    if status == 408:
        return "timeout"
    if status >= 500:
        return "server_error"
    return "validation_error"


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text
