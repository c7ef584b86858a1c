"""The storage operations a rehost needs, each with the current token and the retry policy (``storage``).

Every byte goes out through the run's ``Bandwidth``, and every attempt holds one of the run's upload slots
(``--upload-concurrency``, separate from the Assets API's ``--concurrency``) while it is on the wire: a request
waiting out its backoff or ``Retry-After`` holds none (``storage.Requests``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import orjson

from ingest.rehost.bandwidth import Bandwidth
from ingest.rehost.storage import BodyFactory, Requests, StorageError, TokenCache, TokenRefused, safe_file_name

T = TypeVar("T")


class StorageClient:
    """Single uploads, and the three steps of a multipart upload."""

    def __init__(self, requests: Requests, tokens: TokenCache, *, bandwidth: Bandwidth) -> None:
        self.requests = requests  # retrying request sender; each attempt holds one of the run's upload slots
        self.tokens = tokens  # the run's token
        self.bandwidth = bandwidth  # the run's byte budget

    async def warm(self) -> None:
        """Fetch the run's token now, beside the preflight, so that the first upload does not wait for it (a round
        trip and a TLS handshake with another host). A failure is the first upload's to meet and report."""
        with contextlib.suppress(StorageError):
            await self.tokens.get(self.requests)

    async def upload(self, body: BodyFactory, *, size: int, file_name: str, content_type: str) -> str:
        """Upload ``size`` bytes in one request; the access url."""

        async def attempt() -> str:
            token = await self.tokens.get(self.requests)
            headers = {
                "Authorization": token.header,
                "Content-Type": content_type,
                "X-Fal-File-Name": safe_file_name(file_name),
                "Content-Length": str(size),
                "Accept": "application/json",
            }
            url = f"{token.base_url.rstrip('/')}/files/upload"
            return await self._access_url("POST", url, headers, lambda: self.bandwidth.paced(body()))

        return await self._with_token(attempt)

    async def start(self, *, file_name: str, content_type: str) -> tuple[str, str]:
        """Begin a multipart upload: (access_url, uploadId)."""

        async def attempt() -> tuple[str, str]:
            token = await self.tokens.get(self.requests)
            headers = {
                "Authorization": token.header,
                "Content-Type": content_type,
                "X-Fal-File-Name": safe_file_name(file_name),
                "Accept": "application/json",
            }
            url = f"{token.base_url.rstrip('/')}/files/upload/multipart"
            data = await self.requests.json("POST", url, headers=headers, bearer=True)
            try:
                return str(data["access_url"]), str(data["uploadId"])
            except KeyError as exc:
                raise StorageError(f"multipart start answer lacks {exc}", retryable=True) from None

        return await self._with_token(attempt)

    async def put_part(
        self, access_url: str, upload_id: str, number: int, data: bytes | bytearray, content_type: str
    ) -> str:
        """Upload one part; its ETag (a part answered without one is retried)."""

        async def headers() -> dict[str, str]:
            token = await self.tokens.get(self.requests)
            return {
                "Authorization": token.header,
                "Content-Type": content_type,
                "Content-Length": str(len(data)),
                "Accept-Encoding": "identity",  # as fal-client: a compressed answer may lose the ETag
            }

        async def attempt() -> str:
            url = f"{access_url}/multipart/{upload_id}/{number}"
            _, etag = await self.requests.send(
                "PUT", url, headers=headers, body=lambda: self.bandwidth.paced([data]), want_etag=True, bearer=True
            )
            assert etag is not None  # want_etag retries until there is one
            return etag

        return await self._with_token(attempt)

    async def complete(self, access_url: str, upload_id: str, etags: dict[int, str]) -> str:
        """Finish a multipart upload with every part's ETag; the access url."""
        body = orjson.dumps({"parts": [{"partNumber": n, "etag": etags[n]} for n in sorted(etags)]})

        async def attempt() -> str:
            token = await self.tokens.get(self.requests)
            headers = {"Authorization": token.header, "Content-Type": "application/json"}
            url = f"{access_url}/multipart/{upload_id}/complete"
            await self.requests.send("POST", url, headers=headers, body=lambda: _one(body), bearer=True)
            return access_url

        return await self._with_token(attempt)

    async def _access_url(
        self, method: str, url: str, headers: dict[str, str], body: Callable[[], AsyncIterator[Any]]
    ) -> str:
        data = await self.requests.json(method, url, headers=headers, body=body, bearer=True)
        access_url = data.get("access_url")
        if not isinstance(access_url, str) or not access_url:
            raise StorageError(f"{method} {url}: answer has no access_url", retryable=True)
        return access_url

    async def _with_token(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()``; after a 401, once more with a freshly fetched token."""
        try:
            return await attempt()
        except TokenRefused:
            self.tokens.drop_current()
        try:
            return await attempt()
        except TokenRefused as exc:
            raise StorageError(f"storage refused a fresh token: {exc}", retryable=False, status=401) from None

    def __repr__(self) -> str:
        return f"StorageClient({self.tokens!r}, {self.bandwidth!r}, retries={self.requests.retries})"


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data
