"""The rehost journal: what has been uploaded, and multipart uploads in progress, durable beside the results file.

``<results>.rehost.jsonl``, append-only, one JSON object a line, each fsynced before the call returns:

```
{"t": "uploaded", "key": "…", "rehost": {source, kind, fingerprint, sha256, size, content_type, url, …}}
{"t": "multipart", "key": "…", "upload_id": "…", "access_url": "…", "part_size": 10485760,
 "fingerprint": {…}, "started_at": 1764700000.0}
{"t": "part", "key": "…", "upload_id": "…", "n": 3, "etag": "\\"…\\""}
{"t": "dropped", "key": "…", "upload_id": "…"}            (a multipart upload given up: start afresh)
```

An ``uploaded`` line is written as soon as the storage has the bytes and before the url is first registered, so a
crash between the two costs no second upload: the rerun registers the same url under the same key. A ``multipart``
line and its ``part`` lines let a crashed multipart upload go on from its last acknowledged part. A torn last line
(the process was killed mid-write) is ignored.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import orjson


def journal_path(results_path: Path) -> Path:
    """Where the journal of ``results_path`` lives."""
    return results_path.with_name(results_path.name + ".rehost.jsonl")


@dataclass(slots=True)
class PendingMultipart:
    """A multipart upload that was started and not completed."""

    upload_id: str
    access_url: str
    part_size: int
    fingerprint: dict[str, Any]
    started_at: float  # wall-clock seconds
    etags: dict[int, str] = field(default_factory=dict)  # part number -> ETag, parts the storage acknowledged


class RehostJournal:
    """The journal of one results file; load it with ``open()``, close it with ``close()``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.uploaded: dict[str, dict[str, Any]] = {}  # key -> its rehost object
        self.by_sha256: dict[str, str] = {}  # sha256 of uploaded bytes -> their url (for --dedupe-content)
        self.multipart: dict[str, PendingMultipart] = {}  # key -> its unfinished multipart upload
        self._file: Any = None  # the append handle, once opened
        self._lock = anyio.Lock()  # one write at a time, so lines never interleave

    def load(self) -> None:
        """Read what earlier runs wrote (a missing file is an empty journal)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        if raw and not raw.endswith(b"\n"):
            # A torn last line: cut it off, or the next append would be glued to it and lost too.
            raw = raw[: raw.rfind(b"\n") + 1]
            os.truncate(self.path, len(raw))
        for line in raw.split(b"\n"):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a torn line from a killed process
            if isinstance(record, dict):
                self._apply(record)

    def _apply(self, record: dict[str, Any]) -> None:
        key, kind = record.get("key"), record.get("t")
        if not isinstance(key, str):
            return
        if kind == "uploaded":
            self.uploaded[key] = record["rehost"]
            self.by_sha256.setdefault(record["rehost"]["sha256"], record["rehost"]["url"])
            self.multipart.pop(key, None)
        elif kind == "multipart":
            self.multipart[key] = PendingMultipart(
                record["upload_id"],
                record["access_url"],
                record["part_size"],
                record["fingerprint"],
                record["started_at"],
            )
        elif kind == "part":
            pending = self.multipart.get(key)
            if pending is not None and pending.upload_id == record.get("upload_id"):
                pending.etags[int(record["n"])] = str(record["etag"])
        elif kind == "dropped":
            pending = self.multipart.get(key)
            if pending is not None and pending.upload_id == record.get("upload_id"):
                del self.multipart[key]

    def resumable(self, key: str, fingerprint: dict[str, Any], *, max_age: float) -> PendingMultipart | None:
        """The unfinished multipart upload of ``key`` if its source is unchanged and it is younger than ``max_age``."""
        pending = self.multipart.get(key)
        if pending is None or pending.fingerprint != fingerprint or time.time() - pending.started_at > max_age:
            return None
        return pending

    async def record_uploaded(self, key: str, rehost: dict[str, Any]) -> None:
        """Make ``key``'s upload durable."""
        await self._write({"t": "uploaded", "key": key, "rehost": rehost})
        self.uploaded[key] = rehost
        self.by_sha256.setdefault(rehost["sha256"], rehost["url"])
        self.multipart.pop(key, None)

    async def record_started(self, key: str, pending: PendingMultipart) -> None:
        """Note a new multipart upload of ``key``."""
        record = {
            "t": "multipart",
            "key": key,
            "upload_id": pending.upload_id,
            "access_url": pending.access_url,
            "part_size": pending.part_size,
            "fingerprint": pending.fingerprint,
            "started_at": pending.started_at,
        }
        await self._write(record)
        self.multipart[key] = pending

    async def record_part(self, key: str, pending: PendingMultipart, number: int, etag: str) -> None:
        """Note a part the storage acknowledged."""
        await self._write({"t": "part", "key": key, "upload_id": pending.upload_id, "n": number, "etag": etag})
        pending.etags[number] = etag

    async def record_dropped(self, key: str, pending: PendingMultipart) -> None:
        """Give up ``key``'s multipart upload (its id is unknown, or it is too old)."""
        await self._write({"t": "dropped", "key": key, "upload_id": pending.upload_id})
        self.multipart.pop(key, None)

    async def _write(self, record: dict[str, Any]) -> None:
        line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        async with self._lock:
            await anyio.to_thread.run_sync(self._append, line)

    def _append(self, line: bytes) -> None:
        if self._file is None:
            self._file = self.path.open("ab")
        self._file.write(line)
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        """Close the append handle, if any."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __repr__(self) -> str:
        return f"RehostJournal({str(self.path)!r}, uploaded={len(self.uploaded)}, multipart={len(self.multipart)})"
