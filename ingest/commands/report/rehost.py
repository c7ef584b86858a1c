"""The rehost part of ``ingest report``: bytes uploaded into fal storage, upload throughput, failures by source kind.

Counted from the records' ``rehost`` objects (``ingest.results.record``): a succeeded record with one is an item
whose media was uploaded (``how``: ``single``, ``multipart``) or reused the bytes of another (``deduplicated``).
Failures are the items failed *now* whose error names a ``source_kind`` (``source_unreadable``, ``rehost_failed``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ingest.results.rules import error_of
from ingest.terminal import human_size

UPLOADED = ("single", "multipart")


@dataclass(slots=True)
class RehostTally:
    """Rehost figures of a set of results files."""

    items: int = 0  # succeeded items with a rehost object
    uploads: int = 0  # of which uploaded (not deduplicated)
    bytes: int = 0  # bytes of those uploads
    upload_ms: int = 0  # time spent uploading them, summed over uploads (they overlap)
    by_kind: Counter[str] = field(default_factory=Counter)  # succeeded rehosted items by source kind
    failed_by_kind: Counter[str] = field(default_factory=Counter)  # rehost failures now, by source kind
    first_ms: int | None = None  # earliest start of a rehost (finished_at - elapsed_ms - upload_ms)
    last_ms: int | None = None  # latest finished_at of a rehosted record

    def add_record(self, record: dict[str, Any], stamp: int | None) -> None:
        """Count a succeeded record's rehost object, if it has one."""
        rehost = record.get("rehost")
        if record.get("status") != "succeeded" or not isinstance(rehost, dict):
            return
        self.items += 1
        self.by_kind[str(rehost.get("kind") or "?")] += 1
        size, elapsed = rehost.get("size"), rehost.get("upload_ms")
        if rehost.get("how") in UPLOADED and isinstance(size, int):
            self.uploads += 1
            self.bytes += size
            self.upload_ms += elapsed if isinstance(elapsed, int) else 0
        if stamp is not None:
            registered = record.get("elapsed_ms")
            began = stamp - (elapsed if isinstance(elapsed, int) else 0)
            began -= registered if isinstance(registered, int) else 0
            self.first_ms = began if self.first_ms is None else min(self.first_ms, began)
            self.last_ms = stamp if self.last_ms is None else max(self.last_ms, stamp)

    def add_failure(self, record: dict[str, Any]) -> None:
        """Count a current failure that happened while rehosting."""
        kind = error_of(record).get("source_kind")
        if kind:
            self.failed_by_kind[str(kind)] += 1

    @property
    def bytes_per_s(self) -> float | None:
        """Bytes uploaded ÷ the time from the first upload's start to the last rehosted record (all uploads together,
        registration included)."""
        if self.first_ms is None or self.last_ms is None or self.last_ms <= self.first_ms:
            return None
        return self.bytes / ((self.last_ms - self.first_ms) / 1000)

    @property
    def per_upload_bytes_per_s(self) -> float | None:
        """Bytes uploaded ÷ the summed time of each upload: one upload's speed, on average."""
        return self.bytes / (self.upload_ms / 1000) if self.upload_ms else None

    def to_json(self) -> dict[str, Any]:
        """The report's ``rehost`` object (always present; zeros when nothing was rehosted)."""
        return {
            "items": self.items,
            "uploads": self.uploads,
            "bytes_uploaded": self.bytes,
            "bytes_per_s": _rounded(self.bytes_per_s),
            "per_upload_bytes_per_s": _rounded(self.per_upload_bytes_per_s),
            "items_by_source_kind": dict(sorted(self.by_kind.items())),
            "failed_by_source_kind": dict(sorted(self.failed_by_kind.items())),
        }

    def text_rows(self) -> list[Sequence[object]]:
        """The text report's rows (header first); none when nothing was rehosted or failed to be."""
        kinds = sorted(set(self.by_kind) | set(self.failed_by_kind))
        if not kinds:
            return []
        rows: list[Sequence[object]] = [("source kind", "rehosted items", "rehost failures now")]
        rows += [(kind, self.by_kind[kind], self.failed_by_kind[kind]) for kind in kinds]
        rows.append(("total", self.items, sum(self.failed_by_kind.values())))
        return rows

    def summary_line(self) -> str:
        """``12 uploads, 1.2 GiB; 45.0 MiB/s overall, 20.1 MiB/s per upload``."""
        line = f"{self.uploads:,} uploads, {human_size(self.bytes)}"
        rates = []
        if self.bytes_per_s is not None:
            rates.append(f"{human_size(self.bytes_per_s)}/s overall")
        if self.per_upload_bytes_per_s is not None:
            rates.append(f"{human_size(self.per_upload_bytes_per_s)}/s per upload")
        return line + (f"; {', '.join(rates)}" if rates else "")


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
