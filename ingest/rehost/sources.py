"""Where a row's media comes from, and how to read it and fingerprint it cheaply.

| manifest url | kind | fingerprint (before any byte is read) |
| --- | --- | --- |
| ``media/a.png`` (from the manifest's folder), ``/abs/a.png``, ``file:///abs/a.png`` | ``local`` | size + mtime_ns |
| ``http(s)://…`` not on fal's hosts | ``http`` | ``Content-Length`` + ``ETag`` (else ``Last-Modified``) |
| ``s3://bucket/key``, ``gs://…``, ``az://…`` | ``s3`` / ``gs`` / ``az`` | size + ETag / version (GCS: generation) |

Object stores go through obstore (the standard credential chains; ``AWS_ENDPOINT_URL`` and ``AWS_ALLOW_HTTP``
honoured, so a local S3 works); http through the run's aiohttp session. Every source streams: ``read()`` yields
chunks of about ``CHUNK`` bytes and never holds the file. ``read(digest=…)`` hashes every chunk before yielding it:
a local file's in the worker thread that read it, so that sha256 (1 ms a MiB) runs beside the event loop's sends.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import unquote, urlsplit

import aiohttp
import anyio

from ingest.manifest.object_stores import bucket_root, object_store

if TYPE_CHECKING:
    from hashlib import _Hash

SourceKind = Literal["local", "http", "s3", "gs", "az"]
OBJECT_SCHEMES: tuple[SourceKind, ...] = ("s3", "gs", "az")
CHUNK = 1 << 20  # bytes per read


class SourceError(Exception):
    """The source cannot be read: missing, forbidden, or its server failed; ``retryable`` says whether a rerun tries
    again. Missing and forbidden sources are retryable: the usual fix is to put the file in place or grant access,
    and the row is then unchanged, so a plain rerun should take it (it costs a stat, or a HEAD, per rerun)."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What identifies one version of a source without reading it: its size and a version token."""

    size: int | None
    version: str  # "mtime_ns=…", "etag=…", "version=…", "last_modified=…", or "" when the source offers none

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, as recorded in the ``rehost`` object."""
        return {"size": self.size, "version": self.version}


class Source(Protocol):
    """A readable source of bytes."""

    kind: SourceKind
    location: str  # the absolute path or URL actually read
    file_name: str  # the name given to the storage (X-Fal-File-Name)

    async def stat(self) -> Fingerprint:
        """The source's fingerprint; ``SourceError`` when it cannot be reached."""
        ...

    def read(self, offset: int = 0, *, digest: _Hash | None = None) -> AsyncGenerator[bytes]:
        """The bytes from ``offset`` on, in chunks, each hashed into ``digest`` (if any) before it is yielded."""
        ...


def source_kind(url: str) -> SourceKind:
    """The kind of source a manifest url names (anything without a known scheme is a local path)."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme in ("http", "https"):
        return "http"
    if scheme in OBJECT_SCHEMES:
        return scheme
    return "local"


class Sources:
    """Opens the sources of one run: http through its session, one obstore store per bucket (each holds a
    connection pool and cached credentials)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session  # the run's session
        self._stores: dict[str, Any] = {}  # "s3://bucket" -> its obstore store

    def open(self, url: str, *, manifest_dir: Path) -> Source:
        """The source for a manifest url; a relative path is taken from ``manifest_dir``."""
        kind = source_kind(url)
        if kind == "http":
            return HttpSource(url, self._session)
        if kind in OBJECT_SCHEMES:
            root = bucket_root(url)
            if root not in self._stores:
                self._stores[root] = object_store(root)
            return ObjectSource(url, kind, self._stores[root])
        return LocalSource(local_path(url, manifest_dir))

    def __repr__(self) -> str:
        return f"Sources(stores={sorted(self._stores)})"


def local_path(url: str, manifest_dir: Path) -> Path:
    """The file a local manifest url names: ``file://`` URLs decoded, relative paths joined to ``manifest_dir``."""
    is_file_url = url.lower().startswith("file://")
    path = Path(unquote(urlsplit(url).path)) if is_file_url else Path(os.path.expanduser(url))
    return path if path.is_absolute() else manifest_dir / path


class LocalSource:
    """A file on a local disk or a mounted share."""

    kind: SourceKind = "local"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path)
        self.file_name = path.name

    async def stat(self) -> Fingerprint:
        try:
            st = await anyio.to_thread.run_sync(os.stat, self.path)
        except FileNotFoundError:
            raise SourceError(f"no such file: {self.path}", retryable=True) from None
        except OSError as exc:
            raise SourceError(f"cannot read {self.path}: {exc.strerror}", retryable=True) from None
        return Fingerprint(st.st_size, f"mtime_ns={st.st_mtime_ns}")

    async def read(self, offset: int = 0, *, digest: _Hash | None = None) -> AsyncGenerator[bytes]:
        try:
            file = await anyio.to_thread.run_sync(open, self.path, "rb")
        except OSError as exc:
            raise SourceError(f"cannot read {self.path}: {exc.strerror}", retryable=True) from None

        def next_chunk() -> bytes:  # in a worker thread: the read and the hash (hashlib releases the GIL)
            data = file.read(CHUNK)
            if digest is not None:
                digest.update(data)
            return data

        try:  # closed synchronously, so that a generator dropped unfinished still closes its file
            file.seek(offset)
            while data := await anyio.to_thread.run_sync(next_chunk):
                yield data
        finally:
            file.close()

    def __repr__(self) -> str:
        return f"LocalSource({self.location!r})"


class HttpSource:
    """A file behind another http(s) host (another CDN), read with the run's session."""

    kind: SourceKind = "http"

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.location = url
        self.file_name = posixpath.basename(unquote(urlsplit(url).path)) or "upload.bin"
        self._session = session  # the run's session (the storage and the Assets API share it)

    async def stat(self) -> Fingerprint:
        try:
            async with self._session.head(self.location, allow_redirects=True) as resp:
                _check_status(resp.status, self.location)
                etag, modified = resp.headers.get("ETag"), resp.headers.get("Last-Modified")
                version = f"etag={etag}" if etag else f"last_modified={modified}" if modified else ""
                return Fingerprint(resp.content_length, version)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SourceError(f"{self.location}: {type(exc).__name__}: {exc}", retryable=True) from None

    async def read(self, offset: int = 0, *, digest: _Hash | None = None) -> AsyncGenerator[bytes]:
        headers = {"Range": f"bytes={offset}-", "Accept-Encoding": "identity"} if offset else {}
        headers.setdefault("Accept-Encoding", "identity")  # the bytes as stored, so size and hash match the source
        timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
        try:
            async with self._session.get(self.location, headers=headers, timeout=timeout) as resp:
                _check_status(resp.status, self.location)
                async for data in resp.content.iter_chunked(CHUNK):
                    if digest is not None:
                        digest.update(data)
                    yield data
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SourceError(f"{self.location}: {type(exc).__name__}: {exc}", retryable=True) from None

    def __repr__(self) -> str:
        return f"HttpSource({self.location!r})"


def _check_status(status: int, url: str) -> None:
    if status in (200, 206):
        return
    # Missing or forbidden may be fixed by putting the file there or granting access: a rerun tries again.
    raise SourceError(f"{url}: HTTP {status}", retryable=status >= 500 or status in (401, 403, 404, 408, 429))


class ObjectSource:
    """An object in S3, GCS or Azure Blob Storage, through obstore."""

    def __init__(self, url: str, kind: SourceKind, store: Any) -> None:
        self.kind = kind
        self.location = url
        self._store = store  # the obstore store of the object's bucket
        self._path = unquote(urlsplit(url).path.lstrip("/"))  # the object's key inside it
        self.file_name = posixpath.basename(self._path) or "upload.bin"

    async def stat(self) -> Fingerprint:
        import obstore

        try:
            meta = await obstore.head_async(self._store, self._path)
        except FileNotFoundError:
            raise SourceError(f"no such object: {self.location}", retryable=True) from None
        except Exception as exc:  # obstore raises its own tree (GenericError, PermissionDeniedError, …)
            raise SourceError(f"{self.location}: {type(exc).__name__}: {exc}", retryable=_retryable(exc)) from None
        version = meta.get("version") or meta.get("e_tag")
        label = "version" if meta.get("version") else "etag"
        return Fingerprint(meta["size"], f"{label}={version}" if version else "")

    async def read(self, offset: int = 0, *, digest: _Hash | None = None) -> AsyncGenerator[bytes]:
        import obstore

        options: dict[str, Any] = {"range": {"offset": offset}} if offset else {}
        try:
            result = await obstore.get_async(self._store, self._path, options=options)  # type: ignore[arg-type]
            async for piece in result.stream(min_chunk_size=CHUNK):
                data = bytes(piece)
                if digest is not None:
                    digest.update(data)
                yield data
        except FileNotFoundError:
            raise SourceError(f"no such object: {self.location}", retryable=True) from None
        except Exception as exc:  # see stat()
            raise SourceError(f"{self.location}: {type(exc).__name__}: {exc}", retryable=_retryable(exc)) from None

    def __repr__(self) -> str:
        return f"ObjectSource({self.location!r})"


def _retryable(exc: Exception) -> bool:
    return type(exc).__name__ not in ("PermissionDeniedError", "UnauthenticatedError", "NotFoundError")
