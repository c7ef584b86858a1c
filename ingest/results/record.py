"""The results file's record: one JSON object per line, append-only (``docs/design.md`` § Results file).

```
{"key": "…", "status": "succeeded" | "failed" | "invalid" | "duplicate", "body_sha256": "…",
 "error": {"type": "…", "message": "…", "request_id": "…", "retryable": false, "field": "…"?} | null,
 "manifest": "media.csv", "line": 17, "attempts": 2, "http_status": 201,
 "duplicate_of": {"manifest": "…", "line": 3} | null, "run_id": "…", "finished_at": "2026-…Z", "elapsed_ms": 123,
 "item": {…request body…}, "asset": {…} | null, "rehost": {source, kind, fingerprint, sha256, size, content_type,
 url, how, upload_ms}?, "row_fp": "<16 hex digits>"?}
```

``row_fp`` (succeeded records of rows read from a manifest line of their own) lets a rerun skip that line unread.

``item`` is the exact request body for valid rows, and the row's fields as read for invalid ones, so that
``ingest failed`` can turn failures back into a manifest — except for credentials in a media URL
(``https://user:pass@host/…``), which are masked (``https://***@host/…``): the file is not a place for secrets.
A rehosted item's ``item`` keeps the manifest's source url (its identity); the fal url it was registered with is
``rehost.url`` (and ``asset.url``).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from ingest.results.rules import utc_now


class Status(enum.StrEnum):
    """A record's final status."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INVALID = "invalid"
    DUPLICATE = "duplicate"


@dataclass(slots=True)
class Result:
    """One final outcome, exactly as written to the results file."""

    key: str | None
    manifest: str
    line: int
    status: Status
    item: dict[str, Any] | None
    body_sha256: str | None = None
    attempts: int = 0
    http_status: int | None = None
    asset: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    duplicate_of: dict[str, Any] | None = None
    elapsed_ms: int = 0
    run_id: str = ""
    finished_at: str = ""
    index: int | None = None  # the item's position in its manifest record, when one record made several items
    row_fp: int = 0  # fingerprint of the manifest line the row was read from (ingest.manifest.skip); 0: none
    rehost: dict[str, Any] | None = None  # a rehosted item's upload: source, fingerprint, sha256, size, fal url
    # The line ``render`` made when the outcome was decided (the record is final then); b"": not rendered.
    rendered: bytes = field(default=b"", repr=False, compare=False)

    def render(self, finished_at: str) -> None:
        """Make the record's line now, stamped ``finished_at`` (unless it has a stamp), for ``to_line`` to return.
        Rendered as soon as it is built, a record is serialised while its objects are still in the CPU's caches:
        in the sink, up to ``BATCH_DELAY`` later, the same ``to_line`` took ~8 µs instead of ~3.6 µs (a run against
        an instant in-process server). Nothing changes a rendered record."""
        self.finished_at = self.finished_at or finished_at
        self.rendered = b""
        self.rendered = self.to_line()

    def to_line(self) -> bytes:
        """The record as one JSON line, newline included (stamps ``finished_at`` if unset); the rendered line if
        ``render`` made one."""
        if self.rendered:
            return self.rendered
        if not self.finished_at:
            self.finished_at = utc_now()
        # Order matters for speed only: the fields a resume needs (key, status, body_sha256, error) come before the
        # large ones (item, asset), so the resume index finds them near the start of the line without a full parse.
        record = {
            "key": self.key,
            "status": self.status.value,
            "body_sha256": self.body_sha256,
            "error": self.error,
            "manifest": self.manifest,
            "line": self.line,
            **({"index": self.index} if self.index is not None else {}),
            "attempts": self.attempts,
            "http_status": self.http_status,
            "duplicate_of": self.duplicate_of,
            "run_id": self.run_id,
            "finished_at": self.finished_at,
            "elapsed_ms": self.elapsed_ms,
            "item": mask_url_credentials(self.item),
            "asset": mask_url_credentials(self.asset),
        }
        if self.rehost is not None:
            record["rehost"] = self.rehost
        if self.row_fp:
            # Last, at a fixed distance from the end of the line, where the resume index reads it without a parse.
            record["row_fp"] = f"{self.row_fp:016x}"
        return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)

    @property
    def retryable(self) -> bool:
        """Whether a rerun should try this item again without ``--retry-failed``."""
        return bool(self.error and self.error.get("retryable"))


# scheme://userinfo@ — the userinfo runs to the last '@' before the authority ends ('/', '\\', '?', '#').
_USERINFO = re.compile(r"^(\s*[A-Za-z][A-Za-z0-9+.-]*:[/\\]*)[^/\\?#]*@")


def mask_url_credentials(item: dict[str, Any] | None) -> dict[str, Any] | None:
    """``item`` with any ``user:password@`` in its ``url`` replaced by ``***@`` (the item itself is not changed)."""
    if not item:
        return item
    url = item.get("url")
    if not isinstance(url, str) or "@" not in url:
        return item
    masked = _USERINFO.sub(r"\1***@", url, count=1)
    return item if masked == url else {**item, "url": masked}


def error_dict(
    type_: str,
    message: str,
    *,
    retryable: bool,
    request_id: str | None = None,
    field: str | None = None,
) -> dict[str, Any]:
    """The ``error`` object of a record."""
    error: dict[str, Any] = {"type": type_, "message": message, "request_id": request_id, "retryable": retryable}
    if field is not None:
        error["field"] = field
    return error
