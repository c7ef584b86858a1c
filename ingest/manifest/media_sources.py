"""Manifest urls that name media to rehost (``ManifestOptions.allow_sources``, ``--rehost auto|always``).

A row's ``url`` may then also be a local path (relative to the manifest's folder, or absolute), a ``file://`` URL,
or an ``s3://``, ``gs://``, ``az://`` object. It is kept verbatim (it is the item's identity, and a path is not an
IRI to percent-encode); the rest of the row validates as any other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ingest.models import URL_MAX_LENGTH

PLACEHOLDER_URL = "https://rehost.invalid/"  # stands in for a source while the rest of the row is validated
SOURCE_SCHEMES = ("file", "s3", "gs", "az")
_DRIVE = re.compile(r"[A-Za-z]:")


def source_url(data: Mapping[str, Any]) -> str | None:
    """The row's url if it names media to rehost rather than an http(s) URL."""
    url = data.get("url")
    if not isinstance(url, str) or url.strip()[:8].lower().startswith(("http://", "https://")):
        return None
    return url.strip()


def check_source_url(url: str) -> str | None:
    """Why ``url`` is not a usable rehost source (a local path, file://, s3://, gs://, az://), or ``None``."""
    if not url:
        return "a source path must not be empty"
    if len(url) > URL_MAX_LENGTH or any(ord(ch) < 0x20 for ch in url):
        return f"a source path must be at most {URL_MAX_LENGTH} characters, without control characters"
    if url.startswith("//"):
        return "a URL without a scheme (expected http(s)://…, or a local path, file://, s3://, gs://, az://)"
    scheme, sep, rest = url.partition("://")
    head = url.split("/", 1)[0]
    if not sep and ":" in head and not _DRIVE.fullmatch(head):  # a scheme, not a Windows drive
        scheme, sep = head.split(":", 1)[0], ":"
    if sep and scheme.lower() not in SOURCE_SCHEMES:
        return f"unknown scheme '{scheme}:' (expected http or https, or a local path, file://, s3://, gs://, az://)"
    if sep and scheme.lower() != "file" and "/" not in rest.strip("/"):
        return f"'{url}' names a bucket but no object"
    return None
