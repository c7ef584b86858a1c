"""Content types from the file name's extension, by our own table.

``mimetypes`` answers from the machine's ``/etc/mime.types`` and the registry, so the same file gets another type on
another host, and common media (webp, flac, glb, gltf, m4a, mkv) are missing on many. The storage serves files with
the type given at upload, so it must not depend on the machine. Unknown extensions are ``application/octet-stream``.
"""

from __future__ import annotations

import posixpath

OCTET_STREAM = "application/octet-stream"

CONTENT_TYPES: dict[str, str] = {
    # images
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "avif": "image/avif",
    "heic": "image/heic",
    "heif": "image/heif",
    "bmp": "image/bmp",
    "tif": "image/tiff",
    "tiff": "image/tiff",
    "svg": "image/svg+xml",
    "ico": "image/x-icon",
    # video
    "mp4": "video/mp4",
    "m4v": "video/x-m4v",
    "mov": "video/quicktime",
    "webm": "video/webm",
    "mkv": "video/x-matroska",
    "avi": "video/x-msvideo",
    "mpeg": "video/mpeg",
    "mpg": "video/mpeg",
    "ts": "video/mp2t",
    # audio
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "oga": "audio/ogg",
    "opus": "audio/opus",
    "m4a": "audio/mp4",
    "aac": "audio/aac",
    "aiff": "audio/aiff",
    # 3d
    "glb": "model/gltf-binary",
    "gltf": "model/gltf+json",
    "obj": "model/obj",
    "stl": "model/stl",
    "usdz": "model/vnd.usdz+zip",
    "fbx": "application/octet-stream",
    # documents and data sometimes kept beside media
    "json": "application/json",
    "txt": "text/plain",
    "pdf": "application/pdf",
    "zip": "application/zip",
}


def content_type_for(name: str) -> str:
    """The content type of a file called ``name`` (a path or URL path), by extension, case-insensitively."""
    extension = posixpath.splitext(name)[1].lower().lstrip(".")
    return CONTENT_TYPES.get(extension, OCTET_STREAM)
