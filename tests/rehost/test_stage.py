"""The rehost stage against the embedded fake storage, a foreign loopback http host and a loopback S3 (moto)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from ingest.fakeserver import FakeServerConfig, StorageConfig, running_fake_server
from ingest.rehost import (
    MULTIPART_THRESHOLD,
    RehostJournal,
    RehostOptions,
    SourceChanged,
    SourceError,
    StorageError,
    StorageRetry,
    content_type_for,
    safe_file_name,
    source_kind,
)
from ingest.rehost.bandwidth import parse_size
from ingest.rehost.storage import StorageToken, TokenCache
from tests.helpers.rehost import (
    environment,
    fetch_sha256,
    foreign_host,
    loopback_s3,
    rehoster_for,
    write_file,
)

SMALL_PARTS = RehostOptions(multipart_threshold=1 << 20)  # multipart above 1 MiB, so that tests stay small


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_content_types_come_from_our_table() -> None:
    """Types the machine's mimetypes often lacks are in the table; case is ignored; unknown is octet-stream."""
    assert content_type_for("a.WEBP") == "image/webp"
    assert content_type_for("s/b.flac") == "audio/flac"
    assert content_type_for("m.glb") == "model/gltf-binary"
    assert content_type_for("m.gltf") == "model/gltf+json"
    assert content_type_for("x.m4a") == "audio/mp4"
    assert content_type_for("v.mkv") == "video/x-matroska"
    assert content_type_for("README") == "application/octet-stream"


def test_file_names_are_ascii_safe_and_kinds_are_recognised() -> None:
    """``café.png`` goes out as ``cafe.png``; schemes map to source kinds; sizes take K/M/G suffixes."""
    assert safe_file_name("café.png") == "cafe.png"
    assert safe_file_name("日本 語.mp4") == "upload.mp4"
    assert safe_file_name("a b?.png") == "a_b.png"
    kinds = [source_kind(u) for u in ("a.png", "/x/a.png", "file:///a", "https://h/a", "s3://b/k", "gs://b/k")]
    assert kinds == ["local", "local", "local", "http", "s3", "gs"]
    assert (parse_size("10M"), parse_size("1.5K"), parse_size("2G"), parse_size("512")) == (
        10 << 20,
        1536,
        2 << 30,
        512,
    )
    with pytest.raises(ValueError, match="not a size"):
        parse_size("fast")


@pytest.mark.anyio
async def test_token_is_refreshed_a_margin_before_it_expires() -> None:
    """With a 60 s margin, a token expiring in 61 s is reused at once and fetched again a second later."""
    now = [1_000_000.0]

    class FakeRequests:
        calls = 0

        async def json(self, *args: object, **kwargs: object) -> dict[str, str]:
            FakeRequests.calls += 1
            expires = datetime.fromtimestamp(now[0] + 61, UTC).isoformat()
            return {"token": f"t{self.calls}", "token_type": "Bearer", "base_url": "http://x", "expires_at": expires}

    import aiohttp

    from ingest.credentials import ApiKey

    async with aiohttp.ClientSession() as session:
        cache = TokenCache(session, ApiKey("k"), "http://x", clock=lambda: now[0])
        requests = FakeRequests()
        first = await cache.get(requests)  # type: ignore[arg-type]  # a hand-written fake of the sender
        assert (await cache.get(requests)) is first  # type: ignore[arg-type]
        now[0] += 1.5
        second = await cache.get(requests)  # type: ignore[arg-type]
    assert isinstance(first, StorageToken) and second.token == "t2" and cache.fetched == 2


@pytest.mark.anyio
async def test_local_files_relative_absolute_and_file_url(tmp_path: Path) -> None:
    """A relative path (from the manifest's folder), an absolute path and a file:// URL each land byte for byte."""
    shas = {name: write_file(tmp_path / "media" / name, 3000 + i, seed=i) for i, name in enumerate("abc")}
    urls = {"a": "media/a", "b": str(tmp_path / "media" / "b"), "c": (tmp_path / "media" / "c").as_uri()}
    async with running_fake_server() as server, rehoster_for(server, tmp_path / "j.jsonl") as (rehoster, session):
        for name, url in urls.items():
            rehost = await rehoster.rehost(f"key-{name}", url, tmp_path)
            assert rehost["kind"] == "local" and rehost["how"] == "single"
            assert rehost["sha256"] == shas[name] and rehost["size"] == 3000 + "abc".index(name)
            assert rehost["url"].startswith(server.storage_url)
            assert await fetch_sha256(session, rehost["url"]) == shas[name]
        with pytest.raises(SourceError, match="no such file"):
            await rehoster.rehost("key-x", "media/missing.png", tmp_path)


@pytest.mark.anyio
async def test_foreign_http_host_and_multipart_with_faults(tmp_path: Path) -> None:
    """A file behind another http host goes up in parts through 429s, ingress 502s, dropped parts and missing ETags."""
    sha = write_file(tmp_path / "cdn" / "clip.mp4", (25 << 20) + 123)
    faults = StorageConfig(p_429=0.1, p_502_ingress=0.1, p_drop_part=0.2, p_missing_etag=0.2, seed=3)
    async with (
        running_fake_server(FakeServerConfig(storage=faults)) as server,
        foreign_host(tmp_path / "cdn") as cdn,
        rehoster_for(server, tmp_path / "j.jsonl", options=SMALL_PARTS) as (rehoster, session),
    ):
        rehost = await rehoster.rehost("k", f"{cdn}/clip.mp4", tmp_path)
        assert rehost["kind"] == "http" and rehost["how"] == "multipart"
        assert rehost["fingerprint"]["version"].startswith("etag=")
        assert rehost["content_type"] == "video/mp4"
        assert await fetch_sha256(session, rehost["url"]) == sha == rehost["sha256"]
        assert server.storage is not None and server.storage.ledger.parts_dropped > 0
        assert rehoster.client.requests.retries > 0


@pytest.mark.anyio
async def test_file_over_100_mib_goes_up_in_10_mib_parts(tmp_path: Path) -> None:
    """A 101 MiB file, with default settings, is a multipart upload of 11 parts whose bytes match."""
    size = MULTIPART_THRESHOLD + (1 << 20)
    sha = write_file(tmp_path / "big.bin", size)
    async with running_fake_server() as server, rehoster_for(server, tmp_path / "j.jsonl") as (rehoster, session):
        rehost = await rehoster.rehost("big", "big.bin", tmp_path)
        assert rehost["how"] == "multipart" and rehost["size"] == size
        assert await fetch_sha256(session, rehost["url"]) == sha
        assert server.storage is not None and server.storage.ledger.parts_received == 11


@pytest.mark.anyio
async def test_s3_objects_through_obstore(tmp_path: Path) -> None:
    """Objects in a real S3 on loopback (moto) are read through obstore and land byte for byte, ETag fingerprinted."""
    small, large = b"s3 bytes " * 1000, bytes(range(256)) * (12 * 4096)  # 9 KB, 12 MiB
    with loopback_s3("media", {"photos/cat.png": small, "video/big.mov": large}) as env, environment(env):
        async with (
            running_fake_server() as server,
            rehoster_for(server, tmp_path / "j.jsonl", options=SMALL_PARTS) as (rehoster, session),
        ):
            for key, body in (("photos/cat.png", small), ("video/big.mov", large)):
                rehost = await rehoster.rehost(key, f"s3://media/{key}", tmp_path)
                assert rehost["kind"] == "s3" and rehost["size"] == len(body)
                assert rehost["fingerprint"]["version"].startswith("etag=")
                assert await fetch_sha256(session, rehost["url"]) == hashlib.sha256(body).hexdigest()
            with pytest.raises(SourceError, match="no such object"):
                await rehoster.rehost("x", "s3://media/nope.png", tmp_path)


@pytest.mark.anyio
async def test_journal_reuses_uploads_and_reports_changed_sources(tmp_path: Path) -> None:
    """A second rehoster on the same journal reuses the url without uploading; a changed file is SourceChanged."""
    write_file(tmp_path / "a.png", 5000)
    async with running_fake_server() as server:
        async with rehoster_for(server, tmp_path / "j.jsonl") as (rehoster, _):
            first = await rehoster.rehost("k", "a.png", tmp_path)
        async with rehoster_for(server, tmp_path / "j.jsonl") as (rehoster, _):
            assert await rehoster.rehost("k", "a.png", tmp_path) == first
            assert rehoster.uploads == 0 and rehoster.reused == 1
            write_file(tmp_path / "a.png", 5001, seed=9)
            with pytest.raises(SourceChanged):
                await rehoster.rehost("k", "a.png", tmp_path)
        assert server.storage is not None and server.storage.ledger.single_uploads == 1


@pytest.mark.anyio
async def test_interrupted_multipart_resumes_from_the_journal(tmp_path: Path) -> None:
    """A multipart upload that failed halfway resumes with the same uploadId and sends only the missing parts."""
    sha = write_file(tmp_path / "v.mp4", (40 << 20) + 7)
    one_try = StorageRetry(max_attempts=1, max_retry_time=5)
    # One part at a time, and the seed drops the third part: parts 1 and 2 are acknowledged and journaled.
    config = FakeServerConfig(storage=StorageConfig(p_drop_part=0.4, seed=2))
    sequential = RehostOptions(multipart_threshold=1 << 20, part_workers=1)
    async with running_fake_server(config) as server:
        assert server.storage is not None
        async with rehoster_for(server, tmp_path / "j.jsonl", options=sequential, policy=one_try) as (rh, _):
            with pytest.raises(StorageError):
                await rh.rehost("k", "v.mp4", tmp_path)
        journal = RehostJournal(tmp_path / "j.jsonl")
        journal.load()
        done_before = len(journal.multipart["k"].etags)
        received_before = server.storage.ledger.parts_received
        assert done_before == 2
        server.storage.config = StorageConfig()  # the faults pass
        async with rehoster_for(server, tmp_path / "j.jsonl", options=SMALL_PARTS) as (rehoster, session):
            rehost = await rehoster.rehost("k", "v.mp4", tmp_path)
            assert await fetch_sha256(session, rehost["url"]) == sha
        assert server.storage.ledger.multipart_started == 1 and server.storage.ledger.completed == 1
        assert server.storage.ledger.parts_received - received_before == 5 - done_before


@pytest.mark.anyio
async def test_resume_with_an_unknown_upload_id_starts_afresh(tmp_path: Path) -> None:
    """When the storage has forgotten the journaled uploadId, the upload starts again from the first part."""
    sha = write_file(tmp_path / "v.mp4", (21 << 20) + 1)
    one_try = StorageRetry(max_attempts=1, max_retry_time=5)
    config = FakeServerConfig(storage=StorageConfig(p_drop_part=0.5, seed=2))
    async with running_fake_server(config) as server:
        assert server.storage is not None
        async with rehoster_for(server, tmp_path / "j.jsonl", options=SMALL_PARTS, policy=one_try) as (rh, _):
            with pytest.raises(StorageError):
                await rh.rehost("k", "v.mp4", tmp_path)
        server.storage.blobs.forget_pending()
        server.storage.config = StorageConfig()
        async with rehoster_for(server, tmp_path / "j.jsonl", options=SMALL_PARTS) as (rehoster, session):
            rehost = await rehoster.rehost("k", "v.mp4", tmp_path)
            assert await fetch_sha256(session, rehost["url"]) == sha
        assert server.storage.ledger.multipart_started == 2


@pytest.mark.anyio
async def test_expired_tokens_are_replaced_and_dedupe_reuses_bytes(tmp_path: Path) -> None:
    """A token the storage lets lapse is fetched again; with dedupe_content the same bytes upload once."""
    write_file(tmp_path / "a.png", 4000)
    (tmp_path / "b.png").write_bytes((tmp_path / "a.png").read_bytes())
    config = FakeServerConfig(storage=StorageConfig(token_ttl_s=61.0))  # stale 1 s after issue (60 s margin)
    options = RehostOptions(dedupe_content=True)
    async with (
        running_fake_server(config) as server,
        rehoster_for(server, tmp_path / "j.jsonl", options=options) as (rehoster, _),
    ):
        first = await rehoster.rehost("ka", "a.png", tmp_path)
        import anyio

        await anyio.sleep(1.1)
        second = await rehoster.rehost("kb", "b.png", tmp_path)
        assert second["url"] == first["url"] and second["how"] == "deduplicated"
        write_file(tmp_path / "c.png", 10, seed=5)
        await rehoster.rehost("kc", "c.png", tmp_path)
        assert server.storage is not None
        assert server.storage.ledger.tokens_issued == 2 and server.storage.ledger.single_uploads == 2
        assert server.storage.ledger.by_status.get(401, 0) == 0


@pytest.mark.anyio
async def test_a_request_waiting_out_its_retry_after_holds_no_upload_slot(tmp_path: Path) -> None:
    """With one upload slot, a storage 503 (Retry-After: 30) leaves the slot free while its request waits to be retried,
    so other files are not held behind it."""
    write_file(tmp_path / "a.png", 1000)
    async with (
        running_fake_server() as server,
        rehoster_for(server, tmp_path / "j.jsonl", upload_concurrency=1) as (
            rehoster,
            _,
        ),
    ):
        requests = rehoster.client.requests
        await rehoster.client.tokens.get(requests)  # the token first, so that the 503 meets the upload itself
        assert server.storage is not None
        server.storage.config = StorageConfig(p_503=1.0, retry_after_s=30.0)
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(rehoster.rehost, "k", "a.png", tmp_path)
                for _ in range(1500):  # a retry is counted just before its wait begins
                    if requests.retries:
                        break
                    await anyio.sleep(0.01)
                slots = requests.slots
                free = slots.available_tokens
                tg.cancel_scope.cancel()
        assert free == 1, f"{slots.borrowed_tokens} slot(s) held during the wait"
