"""The fake storage's bytes and bookkeeping: files on disk, multipart uploads in progress, issued tokens.

Bytes are spilled to a directory as they arrive (a 1 GiB upload costs the fake no memory); a multipart upload keeps
one file per part, and the stored file is those parts in part order (``segments``): ``complete`` neither copies a
gigabyte into a second file (twice the dirty pages, which the kernel throttles to disk speed) nor reads it back to hash
it — as S3's CompleteMultipartUpload, it is bookkeeping; the whole file's sha256 is computed when first asked for
(``BlobStore.digest``), by a test or ``GET /_admin/storage/files``, not within the client's upload.
``StorageLedger`` holds the figures a test checks (tokens issued, uploads, parts, bytes, rejections) and every stored
file with its sha256.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HASH_CHUNK = 4 << 20


@dataclass(slots=True)
class StoredFile:
    """A file the storage holds, reachable at ``access_url``: the concatenation of its ``segments`` (one file for a
    single upload, the parts in order for a multipart one)."""

    file_id: str
    file_name: str
    content_type: str
    segments: tuple[Path, ...]
    size: int
    sha256: str | None  # None until BlobStore.digest (a multipart file is not read back by complete)
    access_url: str

    def public(self) -> dict[str, Any]:
        """JSON-ready, without the local path (``sha256`` is ``None`` until ``BlobStore.digest``)."""
        return {
            "file_id": self.file_id,
            "file_name": self.file_name,
            "content_type": self.content_type,
            "size": self.size,
            "sha256": self.sha256,
            "access_url": self.access_url,
        }


@dataclass(slots=True)
class PendingUpload:
    """A multipart upload between ``start`` and ``complete``: its future file and the parts received so far."""

    upload_id: str
    file_id: str
    file_name: str
    content_type: str
    access_url: str
    parts: dict[int, tuple[Path, str]] = field(default_factory=dict)  # part number -> (its file, its ETag)


@dataclass(slots=True)
class StorageLedger:
    """What the fake storage did; ``GET /_admin/storage/stats`` serves ``stats()``."""

    tokens_issued: int = 0
    single_uploads: int = 0
    multipart_started: int = 0
    parts_received: int = 0
    parts_dropped: int = 0
    completed: int = 0
    bytes_received: int = 0  # every body byte read, parts that were later replaced included
    by_status: Counter[int] = field(default_factory=Counter)  # status -> storage answers (files served excluded)
    # The transfer window: time.monotonic() of the first upload request (a single upload, a multipart start or a
    # part) and of the last answer to one (or to a complete) since the window was last reset. A benchmark reads it to
    # time the bytes' transfer alone, the same way for every client (monotonic time is the same in every process).
    window_start: float | None = None
    window_end: float | None = None

    def transfer_started(self, now: float) -> None:
        """An upload request arrived at monotonic time ``now``."""
        if self.window_start is None:
            self.window_start = now

    def transfer_answered(self, now: float) -> None:
        """An upload request was answered at monotonic time ``now``."""
        self.window_end = now

    def stats(self, files: int) -> dict[str, Any]:
        """Every figure, JSON-ready."""
        return {
            "tokens_issued": self.tokens_issued,
            "single_uploads": self.single_uploads,
            "multipart_started": self.multipart_started,
            "parts_received": self.parts_received,
            "parts_dropped": self.parts_dropped,
            "completed": self.completed,
            "bytes_received": self.bytes_received,
            "files": files,
            "by_status": {str(status): n for status, n in sorted(self.by_status.items())},
            "window": {"start": self.window_start, "end": self.window_end},
        }


class BlobStore:
    """Files and pending uploads under one directory (a temporary one unless ``root`` is given)."""

    def __init__(self, root: Path | None) -> None:
        self._owned = root is None  # a temporary directory is removed by close()
        self.root = Path(tempfile.mkdtemp(prefix="ingest-fake-storage-")) if root is None else root
        self.root.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, StoredFile] = {}  # file id -> the file
        self.by_url: dict[str, StoredFile] = {}  # access url -> the file
        self.pending: dict[str, PendingUpload] = {}  # upload id -> the multipart upload
        self.tokens: dict[str, float] = {}  # token -> wall-clock expiry (seconds since the epoch)

    def new_id(self) -> str:
        """A fresh opaque id, URL-safe."""
        return secrets.token_hex(8)

    def scratch(self, name: str) -> Path:
        """A path for bytes being received."""
        return self.root / f"{name}.part"

    def add_file(self, stored: StoredFile) -> None:
        """Make ``stored`` reachable."""
        self.files[stored.file_id] = stored
        self.by_url[stored.access_url] = stored

    def assemble(self, upload: PendingUpload, order: list[int]) -> StoredFile:
        """The file made of ``upload``'s parts in ``order`` (not read: its sha256 comes with ``digest``); the caller
        makes it reachable (``add_file``)."""
        segments = tuple(upload.parts[number][0] for number in order)
        size = sum(segment.stat().st_size for segment in segments)
        return StoredFile(
            upload.file_id, upload.file_name, upload.content_type, segments, size, None, upload.access_url
        )

    @staticmethod
    def digest(stored: StoredFile) -> str:
        """``stored``'s sha256, computed from its segments the first time (hashlib and reads release the GIL, so a
        worker thread may run it)."""
        if stored.sha256 is None:
            hasher = hashlib.sha256()
            buffer = bytearray(HASH_CHUNK)
            view = memoryview(buffer)
            for segment in stored.segments:
                with segment.open("rb") as part:
                    while filled := part.readinto(buffer):
                        hasher.update(view[:filled])
            stored.sha256 = hasher.hexdigest()
        return stored.sha256

    def forget_pending(self) -> int:
        """Drop every multipart upload in progress (their ids become unknown); returns how many."""
        count = len(self.pending)
        for upload in self.pending.values():
            for part_path, _ in upload.parts.values():
                part_path.unlink(missing_ok=True)
        self.pending.clear()
        return count

    def clear(self) -> None:
        """Forget every file, upload and token."""
        self.forget_pending()
        for stored in self.files.values():
            for segment in stored.segments:
                segment.unlink(missing_ok=True)
        self.files.clear()
        self.by_url.clear()
        self.tokens.clear()

    def close(self) -> None:
        """Remove the directory if it is a temporary one."""
        if self._owned:
            shutil.rmtree(self.root, ignore_errors=True)

    def __repr__(self) -> str:
        return f"BlobStore(root={str(self.root)!r}, files={len(self.files)}, pending={len(self.pending)})"
