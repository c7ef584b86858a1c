"""The consumer's rehost step: before an item's first registration attempt, its media is put into fal storage.

``prepare(item)`` returns the ``rehost`` object and the body to register (the row's body with the fal url), or the
item's final record when the source cannot be had. The ``uploaded`` record is already fsynced in the journal when
``prepare`` returns, so every attempt, and every later run, registers the same url under the same key.

``verify(item)`` is for an item an earlier run ingested: it only checks that the source's fingerprint is the one
recorded at upload, and records ``changed_since_ingested`` when it is not; nothing is uploaded or registered.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from ingest.admission.admit import WorkItem
from ingest.errors import AuthRejected, IngestError
from ingest.manifest.remote import is_relative_path, join
from ingest.models import canonical_bytes
from ingest.rehost import Rehoster, SourceChanged, SourceError, StorageError, source_kind
from ingest.results.record import Result, Status, error_dict

log = structlog.get_logger("ingest.upload")

CHANGED_MESSAGE = (
    "source changed since it was ingested (its fingerprint differs from the one recorded at upload); not re-uploaded. "
    "To ingest the new version as a new asset, set key_namespace or an explicit idempotency_key"
)


class RehostStep:
    """Rehosts the items of one run; ``manifest_dirs`` maps a manifest's name to the folder its relative paths start
    from: a local folder, or the URL of a remote manifest's folder (``s3://b/dir/``: ``a.png`` is ``s3://b/dir/a.png``).
    """

    def __init__(self, rehoster: Rehoster, manifest_dirs: dict[str, Path | str], *, run_id: str) -> None:
        self.rehoster = rehoster
        self.manifest_dirs = manifest_dirs
        self.run_id = run_id  # stamped on every record
        self.failed_by_kind: dict[str, int] = {}  # source kind -> rehosts that failed this run

    async def prepare(
        self, item: WorkItem, abort: Callable[[IngestError], None]
    ) -> tuple[dict[str, Any], bytes] | Result | None:
        """(rehost, body bytes to register), or the item's final record, or ``None`` (the run is aborted)."""
        url, folder = self._where(item)
        try:
            rehost = await self.rehoster.rehost(item.key, url, folder)
        except SourceChanged as exc:
            return self._record(item, Status.INVALID, error_dict("changed_since_ingested", str(exc), retryable=False))
        except SourceError as exc:
            return self._failed(item, "source_unreadable", str(exc), retryable=exc.retryable)
        except StorageError as exc:
            if exc.status in (401, 403) and not exc.retryable:
                abort(AuthRejected(exc.status, "authorization_error", f"fal storage refused the key: {exc}", None))
                return None
            return self._failed(item, "rehost_failed", str(exc), retryable=exc.retryable)
        return rehost, canonical_bytes({**item.body, "url": rehost["url"]})

    async def verify(self, item: WorkItem) -> Result | None:
        """``changed_since_ingested`` when the source differs from its upload; else ``None`` (still done)."""
        prior = self.rehoster.journal.uploaded.get(item.key)
        if prior is None:
            return None
        try:
            _, fingerprint = await self.rehoster.fingerprint(*self._where(item))
        except SourceError:
            return None  # gone or unreachable: nothing to compare, and the asset exists
        if fingerprint.as_dict() == prior["fingerprint"]:
            return None
        log.warning("item.changed", manifest=item.manifest, line=item.line, key=item.key, source=item.body["url"])
        error = error_dict("changed_since_ingested", CHANGED_MESSAGE, retryable=False)
        return self._record(item, Status.INVALID, error, rehost=prior)

    def is_local(self, item: WorkItem) -> bool:
        """Whether ``item``'s source is a local file (checking it needs no network)."""
        return source_kind(self._where(item)[0]) == "local"

    def _where(self, item: WorkItem) -> tuple[str, Path]:
        """The source to read and the local folder a relative path starts from."""
        url: str = item.body["url"]
        folder = self.manifest_dirs.get(item.manifest, Path.cwd())
        if isinstance(folder, Path):
            return url, folder
        return (join(folder, url) if is_relative_path(url) else url), Path.cwd()

    def _failed(self, item: WorkItem, type_: str, message: str, *, retryable: bool) -> Result:
        kind = source_kind(self._where(item)[0])
        self.failed_by_kind[kind] = self.failed_by_kind.get(kind, 0) + 1
        log.warning(
            "rehost.failed",
            manifest=item.manifest,
            line=item.line,
            key=item.key,
            kind=kind,
            error=type_,
            message=message,
            retryable=retryable,
        )
        error = error_dict(type_, message, retryable=retryable)
        error["source_kind"] = kind
        return self._record(item, Status.FAILED, error)

    def _record(
        self, item: WorkItem, status: Status, error: dict[str, Any], *, rehost: dict[str, Any] | None = None
    ) -> Result:
        return item.record(status, run_id=self.run_id, error=error, rehost=rehost)

    def __repr__(self) -> str:
        return f"RehostStep({self.rehoster!r}, failed_by_kind={self.failed_by_kind})"
