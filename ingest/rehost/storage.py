"""fal's storage protocol, as fal-client 1.0.3 (``fal_client/client.py``) and fal-js (``cdn.ts``) speak it.

1. Token: ``POST {storage_url}/storage/auth/token?storage_type=fal-cdn-v3`` with ``Authorization: Key …`` and body
   ``{}`` answers ``{token, token_type, base_url, expires_at}``.
2. Up to 100 MiB: ``POST {base_url}/files/upload`` with ``Authorization: <token_type> <token>``, ``Content-Type``,
   ``X-Fal-File-Name`` and the raw body with its ``Content-Length`` answers ``{access_url}``.
3. Above: ``POST {base_url}/files/upload/multipart`` answers ``{access_url, uploadId}``; each part is
   ``PUT {access_url}/multipart/{uploadId}/{n}`` with ``Accept-Encoding: identity`` (its ``ETag`` is kept); then
   ``POST {access_url}/multipart/{uploadId}/complete`` with ``{"parts": [{"partNumber": n, "etag": …}]}``.

Where we differ from fal-client, on purpose: the token is refreshed ``TOKEN_MARGIN_S`` before ``expires_at``
(fal-client refreshes only once it has expired, so a request may leave with a token that dies in flight); every
request, parts included, is retried (fal-client sends parts once); ``X-Fal-File-Name`` is made ASCII-safe (fal-client
sends ``café.png`` as is and httpx refuses the header); bodies stream with an explicit ``Content-Length``.

Retried: connection errors, timeouts, 408, 409, 429, 5xx (a 502 from the ingress included), a part answered without
an ``ETag``, and a 401 once per token (the token is dropped and fetched again). A 404 on a part or ``complete`` means
the ``uploadId`` is unknown (``UnknownUpload``); other 4xx are permanent (``StorageError``).
"""

from __future__ import annotations

import posixpath
import random
import re
import time
import unicodedata
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import anyio
import orjson
import structlog

from ingest.credentials import ApiKey

log = structlog.get_logger("ingest.rehost.storage")

TOKEN_MARGIN_S = 60.0  # refresh a token this long before it expires
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
BodyFactory = Callable[[], AsyncIterator[Any]]  # a fresh body stream for each attempt


@dataclass(frozen=True, slots=True)
class StorageRetry:
    """Bounds of one storage request's retries (the run's ``max_attempts`` / ``max_retry_time`` / backoff)."""

    max_attempts: int = 8
    max_retry_time: float = 600.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    max_server_wait: float = 300.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Exponential backoff with equal jitter after ``attempt`` failed tries, as the Assets API's."""
        window = min(self.backoff_max, self.backoff_initial * 2.0 ** (attempt - 1))
        return window / 2 + rng.uniform(0, window / 2)

    def server_wait(self, headers: Mapping[str, str]) -> float | None:
        """``Retry-After`` (delta-seconds or an HTTP-date), clamped; ``None`` without one."""
        value = headers.get("Retry-After")
        if value is None:
            return None
        try:
            seconds = float(value)
        except ValueError:
            try:
                seconds = parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError):
                return None
        return min(max(0.0, seconds), self.max_server_wait)


class StorageError(Exception):
    """The storage refused or kept failing a request; ``retryable`` says whether a later run may succeed."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class UnknownUpload(StorageError):
    """The storage does not know the ``uploadId`` (expired, or from a journal it has forgotten)."""


@dataclass(frozen=True, slots=True)
class StorageToken:
    """A storage token and where it sends bytes."""

    token: str
    token_type: str
    base_url: str
    expires_at: float  # seconds since the epoch

    @property
    def header(self) -> str:
        return f"{self.token_type} {self.token}"


def safe_file_name(name: str) -> str:
    """``name`` as an ASCII header value: accents folded (``café.png`` -> ``cafe.png``), other characters ``_``,
    the extension kept (``日本.mp4`` -> ``upload.mp4``)."""
    stem, extension = posixpath.splitext(posixpath.basename(name))
    return (_ascii(stem).strip("._") or "upload")[:180] + _ascii(extension)[:20]


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", folded)


class TokenCache:
    """One storage token for the run, fetched on first use and again ``margin`` seconds before it expires."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        api_key: ApiKey,
        storage_url: str,
        *,
        margin: float = TOKEN_MARGIN_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session  # the run's session
        self._url = f"{storage_url.rstrip('/')}/storage/auth/token?storage_type=fal-cdn-v3"
        self._headers = {"Authorization": api_key.header(), "Accept": "application/json"}
        self._margin = margin  # seconds before expiry at which the token counts as stale
        self._clock = clock  # wall-clock seconds (expires_at is wall-clock)
        self._token: StorageToken | None = None  # the current token, if any
        self._lock = anyio.Lock()  # one refresh at a time
        self.fetched = 0  # tokens fetched so far

    async def get(self, requests: Requests) -> StorageToken:
        """A token good for at least ``margin`` more seconds."""
        async with self._lock:
            token = self._token
            if token is None or self._clock() >= token.expires_at - self._margin:
                token = self._token = await self._fetch(requests)
            return token

    def drop_current(self) -> None:
        """Forget the current token (the storage refused it), so that the next ``get`` fetches another."""
        self._token = None

    async def _fetch(self, requests: Requests) -> StorageToken:
        data = await requests.json("POST", self._url, headers=self._headers, body=lambda: _once(b"{}"))
        try:
            expires = datetime.fromisoformat(str(data["expires_at"]).replace("Z", "+00:00")).timestamp()
            token = StorageToken(str(data["token"]), str(data.get("token_type") or "Bearer"), data["base_url"], expires)
        except (KeyError, TypeError, ValueError) as exc:
            raise StorageError(f"storage token answer is malformed ({exc!r})", retryable=True) from None
        self.fetched += 1
        log.debug("storage.token", expires_in_s=round(expires - self._clock()), base_url=token.base_url)
        return token

    def __repr__(self) -> str:
        return f"TokenCache(fetched={self.fetched}, url={self._url!r})"


class Requests:
    """Storage requests with the retry policy: ``policy.max_attempts`` tries within ``policy.max_retry_time``. Each
    attempt holds one of ``slots`` while it is on the wire, not while it waits to be retried."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        policy: StorageRetry,
        rng: random.Random,
        *,
        slots: anyio.CapacityLimiter | None = None,
    ) -> None:
        self._session = session
        self.slots = slots or anyio.CapacityLimiter(1)  # attempts on the wire at once (the run's upload slots)
        self._policy = policy
        self._rng = rng  # backoff jitter
        self.retries = 0  # attempts that were retried, for the report

    async def json(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        body: BodyFactory | None = None,
        bearer: bool = False,
    ) -> dict[str, Any]:
        """The JSON object answered to a request that may be retried."""
        payload, _ = await self.send(method, url, headers=headers, body=body, bearer=bearer)
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise StorageError(f"{method} {_short(url)}: answer is not JSON", retryable=True) from None
        if not isinstance(data, dict):
            raise StorageError(f"{method} {_short(url)}: answer is not a JSON object", retryable=True)
        return data

    async def send(
        self,
        method: str,
        url: str | Callable[[], str],
        *,
        headers: dict[str, str] | Callable[[], Any],
        body: BodyFactory | None = None,
        want_etag: bool = False,
        bearer: bool = False,
    ) -> tuple[bytes, str | None]:
        """(body, ETag) of the first answer that succeeds; ``StorageError`` once the policy gives up.

        ``headers`` may be an async callable (so that each attempt carries the current token); with ``bearer``, a
        401 on the first attempt raises ``TokenRefused`` for the caller to fetch a new token.
        """
        started, attempt = time.monotonic(), 0
        while True:
            attempt += 1
            target = url() if callable(url) else url
            hdrs = await headers() if callable(headers) else headers
            status, payload, etag, wait, problem = await self._attempt(method, target, hdrs, body)
            if status is not None and 200 <= status < 300:
                if not want_etag or etag:
                    return payload, etag
                problem = "answer has no ETag"
            if status == 404 and "/multipart/" in target:
                raise UnknownUpload(f"{method} {_short(target)}: upload unknown to the storage", retryable=True)
            if status == 401 and bearer and attempt == 1:
                raise TokenRefused(problem)
            if status is not None and status not in RETRY_STATUSES and not (200 <= status < 300):
                raise StorageError(f"{method} {_short(target)}: {problem}", retryable=False, status=status)
            elapsed = time.monotonic() - started
            if attempt >= self._policy.max_attempts or elapsed >= self._policy.max_retry_time:
                raise StorageError(
                    f"{method} {_short(target)}: {problem} (gave up after {attempt} attempts)",
                    retryable=True,
                    status=status,
                )
            delay = wait if wait is not None else self._policy.backoff(attempt, self._rng)
            self.retries += 1
            log.info("storage.retry", method=method, url=_short(target), attempt=attempt, problem=problem)
            await anyio.sleep(delay)

    async def _attempt(
        self, method: str, url: str, headers: dict[str, str], body: BodyFactory | None
    ) -> tuple[int | None, bytes, str | None, float | None, str]:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)
        data = body() if body is not None else None
        try:
            async with (
                self.slots,
                self._session.request(
                    method, url, data=data, headers=headers, timeout=timeout, allow_redirects=False
                ) as resp,
            ):
                payload = await resp.content.read(1 << 20)
                wait = self._policy.server_wait(resp.headers)
                snippet = payload[:200].decode("utf-8", "replace").strip()
                problem = f"HTTP {resp.status}" + (f": {snippet}" if snippet else "")
                return resp.status, payload, resp.headers.get("ETag"), wait, problem
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return None, b"", None, None, f"{type(exc).__name__}: {exc}"
        finally:
            if data is not None and hasattr(data, "aclose"):
                await data.aclose()


class TokenRefused(Exception):
    """The storage answered 401 to a token: the caller drops it and tries once more with a new one."""


def _short(url: str) -> str:
    return url.split("?", 1)[0]


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
