"""The asset a successful upload creates, shaped exactly as the spec's 201 ``asset`` object.

Fields the real service derives from the media itself are made up plausibly: the title is the URL's file
name, images and videos are 1024x1024, the content type is guessed from the extension, a tag's name is its id.
"""

from __future__ import annotations

import mimetypes
import os
import posixpath
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from ingest.models import UploadRequest

SIDE_PX = 1024  # width and height reported for images and videos
HAS_PIXELS = frozenset({"image", "video"})


def build_asset(upload: UploadRequest, *, request_id: str, created_at: str) -> dict[str, Any]:
    """The 201 ``asset`` for ``upload``, with all 16 fields the spec requires and a fresh ``vector_id``."""
    side = SIDE_PX if upload.type in HAS_PIXELS else None
    parts = urlsplit(upload.url)
    return {
        "vector_id": str(uuid.uuid4()),
        "request_id": request_id,
        "url": upload.url,
        "type": upload.type,
        "title": title_from_url(parts),
        "endpoint": None,  # uploads were not produced by a model endpoint
        "created_at": created_at,
        "source": "upload",
        "prompt": upload.prompt,
        "width": side,
        "height": side,
        "content_type": mimetypes.guess_type(parts.path)[0],
        "is_favorited": upload.favorite,
        "collection_ids": [] if upload.collection_id is None else [upload.collection_id],
        "tags": [{"id": t, "name": t, "created_at": created_at} for t in dict.fromkeys(upload.tag_ids)],
        "similarity": None,  # only search results carry a similarity
    }


def title_from_url(parts: SplitResult) -> str:
    """The URL's file name without its extension, percent-decoded; the host when the path has no name."""
    stem = posixpath.splitext(posixpath.basename(unquote(parts.path)))[0]
    return stem or parts.hostname or "untitled"


def utc_timestamp() -> str:
    """Now as ISO 8601 in UTC with milliseconds and a ``Z``, like the spec's examples."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_request_id() -> str:
    """A UUIDv7 (RFC 9562 section 5.7), like the spec's example: time-ordered, so ids sort by arrival."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 9562 variant
    return str(uuid.UUID(int=value))
