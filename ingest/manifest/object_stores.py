"""A manifest in S3, GCS or Azure Blob Storage, read in ranges through obstore (``ingest.manifest.remote``).

``object_store`` is where every obstore store of the package is built, here and for the rehost stage's media
(``ingest.rehost.sources``): ``obstore.store.from_url`` of ``scheme://bucket`` (``bucket_root``), so the same
credential chains apply (environment, config files, IMDS / IRSA / workload identity) and ``AWS_ENDPOINT_URL`` /
``AWS_ALLOW_HTTP`` reach an S3-compatible store. A manifest's store lives as long as one opening of the manifest (a
run opens it a handful of times: checks, the run's identity record, the read itself); its retries are bounded
(``RETRY``) so that an unreachable endpoint is an error in seconds, not minutes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

from ingest.manifest.remote import ChangedError, RemoteError, first_line

RETRY: Any = {"max_retries": 3, "retry_timeout": timedelta(seconds=30)}


def bucket_root(url: str) -> str:
    """The bucket an object URL is in, as a store is built for it: ``s3://bucket/a/b.png`` → ``s3://bucket``."""
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc}"


def object_store(root: str, *, retry: Any = None) -> Any:
    """A new obstore store of the bucket ``root`` (``s3://bucket``), configured from the environment now; ``retry``
    is obstore's ``RetryConfig`` (``None``: obstore's default)."""
    from obstore.store import from_url

    return from_url(root, retry_config=retry)


class ObjectBackend:
    """One object of a bucket: ``head`` for its size and ETag, then ranged GETs pinned to that ETag."""

    def __init__(self, url: str) -> None:
        self._root = bucket_root(url)
        self._path = unquote(urlsplit(url).path.lstrip("/"))  # the object's key
        self._store: Any = None
        self._etag: str | None = None

    def __repr__(self) -> str:
        return f"ObjectBackend({self._root!r}, {self._path!r})"

    def open(self) -> int | None:
        import obstore

        try:
            self._store = object_store(self._root, retry=RETRY)
            meta = obstore.head(self._store, self._path)
        except Exception as exc:  # obstore's own tree, FileNotFoundError, a configuration ValueError
            raise _error(exc) from None
        self._etag = meta.get("e_tag")
        return int(meta["size"])

    def fetch(self, start: int, end: int) -> bytes:
        import obstore

        options: Any = {"range": (start, end)}
        if self._etag:
            options["if_match"] = self._etag
        try:
            return bytes(obstore.get(self._store, self._path, options=options).bytes())
        except Exception as exc:  # see open()
            raise _error(exc) from None

    def close(self) -> None:
        self._store = None


def _error(exc: Exception) -> RemoteError:
    kind = type(exc).__name__
    text = str(exc)
    if kind == "PreconditionError":
        return ChangedError("changed while it was read")
    if isinstance(exc, FileNotFoundError) or kind == "NotFoundError":
        return RemoteError("no such object (or no such bucket)")
    if kind in ("PermissionDeniedError", "UnauthenticatedError"):
        return RemoteError(f"access denied ({kind}): check the credentials the standard chain finds")
    return RemoteError(f"cannot be read ({kind}: {first_line(text)})")
