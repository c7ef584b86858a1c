"""A manifest behind an https URL (a presigned bucket URL, a file server), read in ranges with ``urllib``.

Synchronous on purpose: the manifest reader runs in a worker thread. ``Range: bytes=a-b`` pieces with the ETag of
the first one expected on every later one (``ingest.manifest.remote``); a server that answers ``200`` to the first
ranged GET does not do ranges, and its one response is read sequentially instead. Proxies come from the
environment (``HTTPS_PROXY``); certificates are verified as for the API (``ingest.tls``: the system's store, or only
the CAs of ``--ca-bundle``). Transient failures (connection errors, 429, 5xx) are tried ``ATTEMPTS`` times; a
certificate that does not verify is not transient, and says how to trust the server's CA.
"""

from __future__ import annotations

import http.client
import re
import ssl
import time
import urllib.error
import urllib.request
from typing import Any

from ingest.manifest.remote import FIRST_PIECE, ChangedError, RemoteError, first_line
from ingest.tls import trust
from ingest.version import __version__

ATTEMPTS = 3
TIMEOUT = 60.0  # seconds per request (connect and each read)
_CONTENT_RANGE = re.compile(r"bytes\s+\d+-\d+/(\d+|\*)")


class HttpBackend:
    """One http(s) object."""

    def __init__(self, url: str, *, ca_bundle: str | None = None) -> None:
        self._url = url
        self._ca_bundle = ca_bundle  # the CAs trusted (``--ca-bundle``); None: the system's store
        self._etag: str | None = None  # of the first piece: every later one must carry it
        self._first: bytes | None = None  # the first piece, fetched by ``open``
        self._stream: Any = None  # the one response of a server that ignores Range

    def __repr__(self) -> str:
        return f"HttpBackend(ranged={self._stream is None})"

    def open(self) -> int | None:
        resp = self._get(0, FIRST_PIECE)
        if resp is None:  # 416: an empty object
            return 0
        if resp.status != 206:
            self._stream = resp
            length = resp.headers.get("Content-Length")
            return int(length) if length and length.isdigit() else None
        with resp:
            self._etag = _strong(resp.headers.get("ETag"))
            match = _CONTENT_RANGE.fullmatch((resp.headers.get("Content-Range") or "").strip())
            self._first = self._read(resp, -1)
        return int(match.group(1)) if match and match.group(1).isdigit() else None

    def fetch(self, start: int, end: int) -> bytes:
        if self._stream is not None:
            return self._read(self._stream, end - start)
        if self._first is not None:
            first, self._first = self._first, None
            return first
        resp = self._get(start, end)
        if resp is None:
            return b""
        with resp:
            if resp.status != 206:
                raise RemoteError(f"the server stopped answering ranged reads (HTTP {resp.status})")
            if self._etag is not None and _strong(resp.headers.get("ETag")) != self._etag:
                raise ChangedError("changed while it was read")
            return self._read(resp, -1)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def _get(self, start: int, end: int) -> Any:
        """The response to a GET of ``[start, end)``; ``None`` for 416 (nothing there); ``RemoteError`` else."""
        headers = {
            "Range": f"bytes={start}-{end - 1}",
            "Accept-Encoding": "identity",
            "User-Agent": f"ingest/{__version__}",
        }
        if self._etag is not None:
            headers["If-Match"] = self._etag
        request = urllib.request.Request(self._url, headers=headers)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return urllib.request.urlopen(request, timeout=TIMEOUT, context=trust(self._ca_bundle))
            except urllib.error.HTTPError as exc:
                exc.close()
                if exc.code == 416:
                    return None
                if exc.code == 412:
                    raise ChangedError("changed while it was read") from None
                if (exc.code >= 500 or exc.code == 429) and attempt < ATTEMPTS:
                    time.sleep(0.5 * attempt)
                    continue
                raise RemoteError(_status_message(exc.code)) from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                if isinstance(getattr(exc, "reason", exc), ssl.SSLCertVerificationError):  # nor will it in a second
                    raise RemoteError(_tls_message(exc)) from None
                if attempt < ATTEMPTS:
                    time.sleep(0.5 * attempt)
                    continue
                reason = getattr(exc, "reason", exc)
                raise RemoteError(f"cannot be reached ({first_line(str(reason))})") from None
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    @staticmethod
    def _read(resp: Any, size: int) -> bytes:
        try:
            return bytes(resp.read(size))
        except (OSError, http.client.HTTPException) as exc:
            raise RemoteError(f"the connection broke ({type(exc).__name__}: {first_line(str(exc))})") from None


def _status_message(status: int) -> str:
    if status == 404:
        return "not found (HTTP 404)"
    if status in (401, 403):
        return f"access denied (HTTP {status})"
    return f"cannot be read (HTTP {status})"


def _tls_message(exc: BaseException) -> str:
    reason = getattr(exc, "reason", exc)
    return (
        f"TLS failure ({first_line(str(reason))}) — if the server is right, trust its CA with --ca-bundle PATH "
        "(or SSL_CERT_FILE)"
    )


def _strong(etag: str | None) -> str | None:
    """A strong ETag, or ``None`` (a weak one, ``W/…``, may not be compared byte for byte)."""
    return etag if etag and not etag.startswith("W/") else None
