"""Manifests read from a bucket or a web server: ``s3://``, ``gs://``, ``az://``, ``https://`` (``http://`` on
loopback only), streamed in ranged pieces, never downloaded whole.

The reader is synchronous (the producer drives it in a worker thread, as it does stdin). Rather than one GET held
open for the hours a rate-limited run can take (servers time out a connection that is not read), the object is read
as a sequence of ranged GETs: ``FIRST_PIECE`` bytes first (enough for format, encoding and delimiter sniffing, so a
preflight costs one small request), doubling up to ``MAX_PIECE``; memory is one piece. Every piece after the first
must come from the same version of the object (S3/GCS/Azure: ``If-Match`` on its ETag; http: the same ETag): a
manifest rewritten while it is read stops there with one ``manifest.changed`` warning, as a local file does. An
http server that ignores ``Range`` is read from its one response, sequentially.

Buckets go through obstore (``object_stores``) with the standard credential chains and ``AWS_ENDPOINT_URL`` /
``AWS_ALLOW_HTTP``, like rehosted media; http(s) through ``urllib`` (``remote_http``).

A manifest that cannot be opened (missing, forbidden, unreachable) is a one-line ``ManifestError``; a piece that
fails part way (after the store's own retries) is an ``OSError``, which the line reader turns into
``ManifestError`` naming the manifest and the last line read.
"""

from __future__ import annotations

import io
import ipaddress
import posixpath
from typing import Protocol
from urllib.parse import quote, urlsplit

import structlog

from ingest.errors import ManifestError

REMOTE_SCHEMES = ("s3", "gs", "az", "https", "http")
FIRST_PIECE = 128 * 1024  # bytes of the first ranged GET: the sniffed prefix is 64 KiB
MAX_PIECE = 8 * 1024 * 1024  # the largest ranged GET, and so the memory a remote manifest holds
BUFFER = 64 * 1024  # the line reader's buffer over the pieces


class RemoteError(Exception):
    """A remote manifest cannot be had: the message says why in one line."""


class ChangedError(RemoteError):
    """The object is no longer the version the first piece came from."""


class Backend(Protocol):
    """One remote object, read in ranges."""

    def open(self) -> int | None:
        """Check the object is there and readable; its size if known. ``RemoteError`` otherwise."""
        ...

    def fetch(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` (fewer at the end of the object, ``b""`` past it). Called in order."""
        ...

    def close(self) -> None: ...


def first_line(text: str, limit: int = 200) -> str:
    """The first line of an error message, shortened (obstore's run over many lines)."""
    line = text.strip().split("\n", 1)[0].strip()
    return line if len(line) <= limit else line[: limit - 1] + "…"


def is_remote(path: str) -> bool:
    """Whether a manifest argument names a remote object rather than a local file."""
    scheme, sep, _ = path.partition("://")
    return bool(sep) and scheme.lower() in REMOTE_SCHEMES


def display_name(url: str) -> str:
    """What records, logs and errors call a remote manifest: its URL without the query (a presigned URL's
    signature is a credential), ``?…`` marking that there was one."""
    parts = urlsplit(url)
    bare = f"{parts.scheme}://{parts.netloc}{parts.path}"
    return bare + "?…" if parts.query else bare


def url_path(url: str) -> str:
    """The path part of ``url`` (what the name-based format and gzip decisions look at)."""
    return urlsplit(url).path


def folder(url: str) -> str:
    """The "folder" of a remote manifest, where its relative rows start: ``s3://b/dir/m.csv`` → ``s3://b/dir/``."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path.rsplit('/', 1)[0]}/"


def join(base: str, relative: str) -> str:
    """A relative path of a row in the remote manifest whose folder is ``base``: ``media/a b.png`` →
    ``s3://b/dir/media/a%20b.png`` (percent-encoded, as the object's key is decoded from the URL); ``..`` never
    climbs above the bucket or host."""
    parts = urlsplit(base)
    joined = posixpath.normpath(posixpath.join(parts.path, relative))
    joined = "/" + joined.lstrip("/")  # "/.." above the root stays at the root
    return f"{parts.scheme}://{parts.netloc}{quote(joined, safe='/')}"


def is_relative_path(url: str) -> bool:
    """Whether a row's url is a relative local path (no scheme, not absolute, not ``~``)."""
    head = url.split("/", 1)[0]
    return bool(url) and ":" not in head and not url.startswith(("/", "~", "\\"))


def check_url(url: str) -> None:
    """``ManifestError`` for a remote manifest URL that cannot be used: no bucket or object, plain http off
    loopback."""
    parts = urlsplit(url)
    scheme, name = parts.scheme.lower(), display_name(url)
    if not parts.netloc or not parts.path.strip("/"):
        raise ManifestError(f"{name}: names no object (expected {scheme}://bucket/path/manifest.csv)")
    if scheme == "http" and not _loopback(parts.hostname or ""):
        raise ManifestError(f"{name}: a manifest is read over https (plain http only from 127.0.0.1 / localhost)")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def backend_for(url: str, *, ca_bundle: str | None = None) -> Backend:
    """The backend that reads ``url`` (obstore for buckets, urllib for http, trusting ``ca_bundle`` if given)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        from ingest.manifest.remote_http import HttpBackend

        return HttpBackend(url, ca_bundle=ca_bundle)
    from ingest.manifest.object_stores import ObjectBackend

    return ObjectBackend(url)


class RemoteReader(io.RawIOBase):
    """The bytes of a remote object, fetched piece by piece as they are read."""

    def __init__(self, backend: Backend, name: str, size: int | None) -> None:
        super().__init__()
        self._backend = backend
        self._name = name
        self.size = size  # None: unknown (read until a piece comes back empty)
        self._pos = 0  # bytes fetched so far
        self._piece = FIRST_PIECE
        self._data = memoryview(b"")  # fetched, not yet read
        self._ended = False
        self.changed = False  # the object changed while it was read; reads now end

    def __repr__(self) -> str:
        return f"RemoteReader(name={self._name!r}, pos={self._pos}, size={self.size})"

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if not self._data and not self._fill():
            return 0
        count = min(len(buffer), len(self._data))
        buffer[:count] = self._data[:count]
        self._data = self._data[count:]
        return count

    def _fill(self) -> bool:
        if self._ended or (self.size is not None and self._pos >= self.size):
            return False
        end = self._pos + self._piece if self.size is None else min(self._pos + self._piece, self.size)
        try:
            data = self._backend.fetch(self._pos, end)
        except ChangedError:
            self._stop_changed()
            return False
        except RemoteError as exc:
            raise OSError(str(exc)) from None
        if not data:
            self._ended = True
            return False
        self._pos += len(data)
        self._piece = min(self._piece * 2, MAX_PIECE)
        self._data = memoryview(data)
        return True

    def _stop_changed(self) -> None:
        self.changed = self._ended = True
        structlog.get_logger("ingest.manifest").warning(
            "manifest.changed",
            manifest=self._name,
            read_bytes=self._pos,
            hint="the object was rewritten while it was read; the rest of it was not read: rerun once it is complete",
        )

    def close(self) -> None:
        if not self.closed:
            self._backend.close()
        super().close()


def open_remote(url: str, *, ca_bundle: str | None = None) -> io.BufferedReader:
    """A buffered, line-readable stream of the object at ``url``; ``ManifestError`` when it cannot be opened.
    ``ca_bundle``: the CAs an https server's certificate must chain to (``--ca-bundle``; None: the system's)."""
    name = display_name(url)
    check_url(url)
    backend = backend_for(url, ca_bundle=ca_bundle)
    try:
        size = backend.open()
    except RemoteError as exc:
        backend.close()
        raise ManifestError(f"{name}: {exc}") from None
    return io.BufferedReader(RemoteReader(backend, name, size), buffer_size=BUFFER)


def first_bytes(url: str, size: int, *, ca_bundle: str | None = None) -> bytes:
    """The first ``size`` bytes of the object (fewer if it is shorter); ``ManifestError`` if it cannot be read."""
    with open_remote(url, ca_bundle=ca_bundle) as stream:
        try:
            return stream.read(size)
        except OSError as exc:
            raise ManifestError(f"{display_name(url)}: {exc}") from None


def read_head(url: str, size: int, *, ca_bundle: str | None = None) -> tuple[int | None, bytes] | None:
    """(the object's size if known, its first ``size`` bytes), or ``None`` when it cannot be read."""
    try:
        with open_remote(url, ca_bundle=ca_bundle) as stream:
            head = stream.read(size)
            total = stream.raw.size  # type: ignore[attr-defined]
    except (ManifestError, OSError):
        return None
    return total, head
