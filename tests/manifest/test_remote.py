"""Manifests read straight from a bucket (a real S3 on loopback) or a web server (aiohttp on loopback)."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import orjson
import pytest
from structlog.testing import capture_logs

from ingest.errors import ManifestError
from ingest.manifest.remote import display_name, folder, is_relative_path, join
from ingest.manifest.source import ManifestSource, count_rows, preflight, read_manifest
from ingest.results.naming import default_results_path
from ingest.results.provenance import same_manifest
from ingest.results.runlog import manifest_identity
from tests.helpers.rehost import environment, loopback_s3
from tests.helpers.remote import web_files

T = TypeVar("T")
CSV = b"url,type,prompt\n" + b"".join(b"https://v3.fal.media/files/a/%d.png,image,p %d\n" % (i, i) for i in range(5))
JSONL = b"".join(orjson.dumps({"url": f"https://v3.fal.media/files/b/{i}.png"}) + b"\n" for i in range(4))


def urls_of(source: ManifestSource) -> list[tuple[int, str | None]]:
    """(line, url) of every row ``source`` yields."""
    return [(row.line, row.request.url if row.request else None) for row in read_manifest(source)]


async def in_thread(call: Callable[[], T]) -> T:
    """Run a blocking manifest read off the event loop (the loopback web server runs on it)."""
    return await anyio.to_thread.run_sync(call)


def test_url_helpers_name_folders_and_join_relative_rows() -> None:
    """A remote manifest's folder, a relative row joined to it (encoded, never above the bucket), a hidden query."""
    assert folder("s3://b/dir/m.csv") == "s3://b/dir/"
    assert folder("https://h/m.csv?sig=x") == "https://h/"
    assert join("s3://b/dir/", "media/a b.png") == "s3://b/dir/media/a%20b.png"
    assert join("s3://b/dir/", "../../../x.png") == "s3://b/x.png"
    assert display_name("https://h/m.csv?X-Amz-Signature=secret") == "https://h/m.csv?…"
    assert [is_relative_path(u) for u in ("a.png", "/a.png", "~/a.png", "file:///a", "s3://b/a")] == [
        True,
        False,
        False,
        False,
        False,
    ]
    assert default_results_path("s3://b/dir/library.csv.gz") == Path("library.results.jsonl")
    assert default_results_path("https://h/x/m.jsonl?sig=1", (1, 2)) == Path("m.results.shard-1-of-2.jsonl")


def test_csv_jsonl_and_gzip_manifests_stream_from_s3() -> None:
    """CSV, JSONL and a gzipped JSONL in a loopback S3 read as the same files on disk would, line numbers kept."""
    objects = {"dir/m.csv": CSV, "dir/m.jsonl": JSONL, "dir/m.jsonl.gz": gzip.compress(JSONL), "dir/raw.txt": JSONL}
    with loopback_s3("lib", objects) as env, environment(env):
        csv = ManifestSource.open("s3://lib/dir/m.csv")
        assert (csv.format, csv.gzip, csv.name) == ("csv", False, "s3://lib/dir/m.csv")
        assert urls_of(csv) == [(i + 2, f"https://v3.fal.media/files/a/{i}.png") for i in range(5)]
        detection = preflight(csv)
        assert detection is not None and detection.delimiter == ","
        assert count_rows(csv) is None  # a remote manifest is not read twice for a progress total
        expected = [(i + 1, f"https://v3.fal.media/files/b/{i}.png") for i in range(4)]
        assert urls_of(ManifestSource.open("s3://lib/dir/m.jsonl")) == expected
        gz = ManifestSource.open("s3://lib/dir/m.jsonl.gz")
        assert gz.gzip and urls_of(gz) == expected
        sniffed = ManifestSource.open("s3://lib/dir/raw.txt")
        assert urls_of(sniffed) == expected


def test_missing_object_bucket_and_bad_urls_are_one_line_errors() -> None:
    """A missing object or bucket, a bucket-only URL and plain http off loopback are ``ManifestError``s naming it."""
    with loopback_s3("lib", {"m.csv": CSV}) as env, environment(env):
        for url, expected in (
            ("s3://lib/nope.csv", "s3://lib/nope.csv: no such object"),
            ("s3://nobucket/m.csv", "s3://nobucket/m.csv: no such object"),
            ("s3://lib/", "names no object"),
            ("http://example.com/m.csv", "over https"),
        ):
            with pytest.raises(ManifestError) as caught:
                ManifestSource.open(url)
            assert expected in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.anyio
@pytest.mark.parametrize("ranges", [True, False])
async def test_a_large_manifest_over_http_streams_in_ranged_pieces(ranges: bool) -> None:
    """A 900 KB CSV over http is read whole, in growing ranged pieces (or from one response when the server
    ignores Range), every row with its line."""
    rows = 20000
    body = b"url,type\n" + b"".join(b"https://v3.fal.media/files/c/%06d.png,image\n" % i for i in range(rows))
    async with web_files({"big.csv": body, "big.csv.gz": gzip.compress(body)}, ranges=ranges) as web:
        for name in ("big.csv", "big.csv.gz"):
            web.seen.clear()
            source = await in_thread(lambda name=name: ManifestSource.open(web.url(name)))  # type: ignore[misc]
            got = await in_thread(lambda source=source: urls_of(source))  # type: ignore[misc]
            assert len(got) == rows and got[-1] == (rows + 1, f"https://v3.fal.media/files/c/{rows - 1:06d}.png")
            asked = [r for n, r in web.seen if n == name]
            if ranges and name == "big.csv":
                assert len(asked) >= 4 and all(r and r.startswith("bytes=") for r in asked)


@pytest.mark.anyio
async def test_http_errors_name_the_manifest_and_say_why() -> None:
    """404, 403 and a closed port are one-line ``ManifestError``s naming the URL (its query hidden)."""
    async with web_files({"secret.csv": CSV}) as web:
        closed = "http://127.0.0.1:9/m.csv"  # the discard port: nothing listens there
        cases = ((web.url("gone.csv?sig=abc"), "404"), (web.url("secret.csv"), "access denied"), (closed, "reached"))
        for url, expected in cases:
            with pytest.raises(ManifestError) as caught:
                await in_thread(lambda url=url: ManifestSource.open(url))  # type: ignore[misc]
            message = str(caught.value)
            assert expected in message and "\n" not in message and "sig=abc" not in message, message


@pytest.mark.anyio
async def test_a_manifest_rewritten_while_read_stops_with_a_warning() -> None:
    """When the object's ETag changes between pieces, reading stops there (``manifest.changed``), as for a file."""
    body = b"url\n" + b"".join(b"https://v3.fal.media/files/d/%06d.png\n" % i for i in range(8000))
    async with web_files({"m.csv": body}) as web:
        source = await in_thread(lambda: ManifestSource.open(web.url("m.csv")))
        rows = read_manifest(source)
        first = await in_thread(lambda: next(rows))
        web.files["m.csv"] = body + b"https://v3.fal.media/files/d/new.png\n"
        with capture_logs() as logs:
            rest: list[Any] = await in_thread(lambda: list(rows))
    assert first.line == 2 and 0 < len(rest) < 8000
    assert [e["manifest"] for e in logs if e["event"] == "manifest.changed"] == [web.url("m.csv")]


def test_a_manifest_moved_into_a_bucket_or_re_signed_is_still_the_same_manifest(tmp_path: Path) -> None:
    """The run record's identity of a local manifest matches its copy in a bucket by its first bytes; a URL
    matches itself whatever its query; another object does not match."""
    local = tmp_path / "library.csv"
    local.write_bytes(CSV)
    recorded = manifest_identity(str(local))
    with loopback_s3("lib", {"moved/library.csv": CSV, "other.csv": JSONL}) as env, environment(env):
        heads: dict[str, bytes | None] = {}
        assert same_manifest("s3://lib/moved/library.csv", recorded, heads)
        assert not same_manifest("s3://lib/other.csv", recorded, heads)
        remote = manifest_identity("s3://lib/moved/library.csv")
    assert remote == {**recorded, "path": "s3://lib/moved/library.csv"}
    signed = {"path": "https://h/m.csv?…", "size": None, "head_sha256": None}
    assert same_manifest("https://h/m.csv?X-Amz-Signature=new", signed)
