"""Rows naming media to rehost (``allow_sources``): what a source url may be, and what it may not."""

from __future__ import annotations

import pytest

from ingest.manifest.media_sources import check_source_url
from ingest.manifest.options import ManifestOptions
from ingest.manifest.rows import RowBuilder


@pytest.mark.parametrize(
    "url",
    ["media/a.png", "/abs/a b.png", "file:///abs/a.png", "s3://bucket/k/a.png", "gs://b/a.mp4", "az://c/a.glb"],
)
def test_sources_accepted(url: str) -> None:
    """Relative and absolute paths (spaces allowed inside), file:// and bucket objects are sources."""
    assert check_source_url(url) is None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("javascript:alert(1)", "unknown scheme"),
        ("data:image/png;base64,AAAA", "unknown scheme"),
        ("ftp://host/a.png", "unknown scheme"),
        ("//v3.fal.media/a.png", "without a scheme"),
        ("s3://bucket", "no object"),
        ("a\x00.png", "control"),
    ],
)
def test_sources_refused(url: str, reason: str) -> None:
    """Other schemes, protocol-relative URLs, bare buckets, padding and control characters are refused."""
    problem = check_source_url(url)
    assert problem is not None and reason in problem


def test_a_source_row_keeps_its_url_and_infers_its_type() -> None:
    """With allow_sources a path row is valid, verbatim, its type inferred; without, it is invalid as before."""
    row = RowBuilder("m.csv", ManifestOptions(allow_sources=True)).build(2, {"url": "media/cat.webp"})
    assert row.request is not None and row.request.url == "media/cat.webp" and row.request.type == "image"
    refused = RowBuilder("m.csv", ManifestOptions()).build(2, {"url": "media/cat.webp"})
    assert refused.request is None and refused.error is not None and "http or https" in refused.error.message
