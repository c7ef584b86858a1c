"""``ingest run`` with rehosting, in process, against the fake (strict: it accepts only urls its storage issued)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import orjson
import pytest
from aiohttp import web

from ingest.fakeserver import FakeServer, FakeServerConfig, FaultConfig, running_fake_server
from ingest.fakeserver.faults import Faults
from ingest.manifest.source import ManifestOptions
from ingest.rehost import RehostConfig, RehostOptions
from ingest.upload.retry import RetryPolicy
from tests.helpers.net import serving
from tests.helpers.pipeline import make_config, run
from tests.helpers.rehost import environment, fetch_sha256, foreign_host, loopback_s3, write_file

STRICT = FakeServerConfig(strict_urls=True)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def rehost_config(manifest: Path, results: Path, server: FakeServer, **rehost: Any) -> Any:
    """A run of ``manifest`` with ``--rehost auto`` against ``server``."""
    return make_config(
        [manifest],
        results,
        server.url,
        rehost_mode="auto",
        rehost=RehostConfig(storage_url=server.storage_url, options=RehostOptions(**rehost)),
        manifest_options=ManifestOptions(allow_sources=True),
    )


def records(results: Path) -> list[dict[str, Any]]:
    """The item records of a results file (run records left out)."""
    lines = [orjson.loads(line) for line in results.read_bytes().splitlines() if line.strip()]
    return [r for r in lines if r.get("status") in ("succeeded", "failed", "invalid", "duplicate")]


def write_jsonl(path: Path, urls: list[str]) -> Path:
    path.write_bytes(b"".join(orjson.dumps({"url": url, "type": "image"}) + b"\n" for url in urls))
    return path


@pytest.mark.anyio
async def test_every_kind_of_source_lands_once_and_a_rerun_does_nothing(tmp_path: Path) -> None:
    """Relative, absolute, file://, a foreign http host and s3:// rows are uploaded, registered with the storage's
    url and bytes matching; a rerun uploads and registers nothing."""
    shas = {n: write_file(tmp_path / "media" / f"{n}.png", 2000 + i, seed=i) for i, n in enumerate("abcd")}
    s3_body = b"object bytes" * 500
    with loopback_s3("lib", {"p/e.png": s3_body}) as env, environment(env):
        async with running_fake_server(STRICT) as server, foreign_host(tmp_path / "media") as cdn:
            urls = [
                "media/a.png",
                str(tmp_path / "media" / "b.png"),
                (tmp_path / "media" / "c.png").as_uri(),
                f"{cdn}/d.png",
                "s3://lib/p/e.png",
            ]
            manifest = write_jsonl(tmp_path / "m.jsonl", urls)
            results = tmp_path / "m.results.jsonl"
            report = await run(rehost_config(manifest, results, server))
            assert report.exit_code == 0, records(results)
            expected = {**shas, "e": hashlib.sha256(s3_body).hexdigest()}
            async with aiohttp.ClientSession() as session:
                for record in records(results):
                    assert record["status"] == "succeeded"
                    rehost = record["rehost"]
                    assert record["asset"]["url"] == rehost["url"]
                    assert server.storage is not None and server.storage.issued(rehost["url"])
                    name = Path(record["item"]["url"]).stem[-1]
                    assert rehost["sha256"] == expected[name] == await fetch_sha256(session, rehost["url"])
            assert server.ledger.created == 5 and server.ledger.stats()["foreign_urls_422"] == 0
            assert server.storage is not None
            uploads = server.storage.ledger.single_uploads
            report = await run(rehost_config(manifest, results, server))
            assert report.exit_code == 0 and report.stats.skipped_done == 5
            assert server.ledger.requests == 5 and server.storage.ledger.single_uploads == uploads


@pytest.mark.anyio
async def test_the_storage_token_is_fetched_beside_the_preflight(tmp_path: Path) -> None:
    """The storage token is asked for while the preflight is out (another host: a round trip and a TLS handshake
    saved before the first byte), not after it came back. A front passing both on to the fake holds the preflight
    for up to 3 s, waiting for the token request."""
    write_file(tmp_path / "a.png", 3000)
    manifest = write_jsonl(tmp_path / "m.jsonl", ["a.png"])
    results = tmp_path / "m.results.jsonl"
    async with running_fake_server(STRICT) as server, aiohttp.ClientSession() as session:
        assert server.storage is not None
        token_asked = anyio.Event()
        seen: list[bool] = []  # per preflight: whether the token had been asked for when it was answered

        async def forward(request: web.Request, url: str) -> web.Response:
            body = await request.read()
            headers = {
                k: v
                for k, v in request.headers.items()
                if k.lower() not in ("host", "content-length", "transfer-encoding")
            }
            async with session.post(url, data=body, headers=headers) as resp:
                return web.Response(status=resp.status, body=await resp.read(), content_type="application/json")

        async def assets(request: web.Request) -> web.Response:
            if "Idempotency-Key" not in request.headers:  # the preflight's probe
                with anyio.move_on_after(3.0):
                    await token_asked.wait()
                seen.append(token_asked.is_set())
            return await forward(request, f"{server.url}/assets/uploads")

        async def token(request: web.Request) -> web.Response:
            token_asked.set()
            return await forward(request, f"{server.storage_url}/storage/auth/token?{request.query_string}")

        app = web.Application()
        app.router.add_post("/v1/assets/uploads", assets)
        app.router.add_post("/storage/auth/token", token)
        async with serving(app) as front:
            config = rehost_config(manifest, results, server)
            config = replace(
                config,
                client=replace(config.client, base_url=f"{front}/v1"),
                preflight=True,
                rehost=replace(config.rehost, storage_url=front),
            )
            report = await run(config)
        assert report.exit_code == 0, records(results)
        assert seen == [True] and server.storage.ledger.tokens_issued == 1 and server.ledger.created == 1


@pytest.mark.anyio
async def test_uploaded_but_unregistered_is_registered_without_a_second_upload(tmp_path: Path) -> None:
    """When registration fails after the upload, the rerun registers the journaled url and uploads nothing."""
    write_file(tmp_path / "a.png", 3000)
    manifest = write_jsonl(tmp_path / "m.jsonl", ["a.png"])
    results = tmp_path / "m.results.jsonl"
    failing = FakeServerConfig(strict_urls=True, faults=FaultConfig(p_5xx=1.0))
    async with running_fake_server(failing) as server:
        assert server.storage is not None and server.api is not None
        config = replace(rehost_config(manifest, results, server), policy=RetryPolicy(max_attempts=2))
        report = await run(config)
        assert report.exit_code == 1 and server.storage.ledger.single_uploads == 1
        assert records(results)[-1]["error"]["retryable"]
        server.api.faults = Faults(FaultConfig())  # the outage is over
        report = await run(rehost_config(manifest, results, server))
        assert report.exit_code == 0 and server.storage.ledger.single_uploads == 1
        last = records(results)[-1]
        assert last["status"] == "succeeded" and server.storage.issued(last["asset"]["url"])


@pytest.mark.anyio
async def test_a_changed_source_is_reported(tmp_path: Path) -> None:
    """A source rewritten after it was ingested is recorded changed_since_ingested, and nothing is sent."""
    write_file(tmp_path / "a.png", 3000)
    manifest = write_jsonl(tmp_path / "m.jsonl", ["a.png"])
    results = tmp_path / "m.results.jsonl"
    async with running_fake_server(STRICT) as server:
        assert server.storage is not None
        assert (await run(rehost_config(manifest, results, server))).exit_code == 0
        write_file(tmp_path / "a.png", 3001, seed=4)
        os.utime(tmp_path / "a.png", ns=(1, 1))
        report = await run(rehost_config(manifest, results, server))
        assert report.exit_code == 1
        last = records(results)[-1]
        assert last["status"] == "invalid" and last["error"]["type"] == "changed_since_ingested"
        assert server.ledger.created == 1 and server.storage.ledger.single_uploads == 1


@pytest.mark.anyio
async def test_a_missing_file_fails_retryably_and_a_plain_rerun_takes_it_once_it_is_there(tmp_path: Path) -> None:
    """A missing local file is failed as source_unreadable (retryable, naming its kind) while the run goes on; once
    the file is put in place, a rerun without --retry-failed uploads and registers it and sends nothing else."""
    write_file(tmp_path / "ok.png", 100)
    manifest = write_jsonl(tmp_path / "m.jsonl", ["ok.png", "late.png"])
    results = tmp_path / "m.results.jsonl"
    async with running_fake_server(STRICT) as server:
        report = await run(rehost_config(manifest, results, server))
        assert report.exit_code == 1
        by_url = {r["item"]["url"]: r for r in records(results)}
        assert by_url["ok.png"]["status"] == "succeeded"
        error = by_url["late.png"]["error"]
        assert error["type"] == "source_unreadable" and error["source_kind"] == "local" and error["retryable"]
        assert "late.png" in error["message"]
        write_file(tmp_path / "late.png", 200, seed=5)
        rerun = await run(rehost_config(manifest, results, server))
        assert rerun.exit_code == 0
        assert server.ledger.created == 2 and server.storage is not None and server.storage.ledger.single_uploads == 2
    final = {r["item"]["url"]: r for r in records(results)}
    assert final["late.png"]["status"] == "succeeded"


@pytest.mark.anyio
async def test_report_and_failed_cover_rehosts(tmp_path: Path) -> None:
    """The report counts bytes uploaded and rehost failures by kind; ``ingest failed`` exports the failed rehost
    with an absolute path, and that manifest, run from elsewhere once the file exists, lands it under its key."""
    from ingest.commands.failed import write_failed_manifest
    from ingest.commands.report import build_report, render_text

    (tmp_path / "m").mkdir()
    write_file(tmp_path / "m" / "ok.png", 4096)
    manifest = write_jsonl(tmp_path / "m" / "m.jsonl", ["ok.png", "late.png"])
    results = tmp_path / "m" / "m.results.jsonl"
    async with running_fake_server(STRICT) as server:
        assert (await run(rehost_config(manifest, results, server))).exit_code == 1
        report = build_report([results])
        assert report.rehost.bytes == 4096 and report.rehost.uploads == 1
        assert dict(report.rehost.failed_by_kind) == {"local": 1}
        assert "Rehost (media uploaded" in render_text(report)
        rerun = tmp_path / "elsewhere" / "rerun.jsonl"
        rerun.parent.mkdir()
        summary = write_failed_manifest([results], rerun)
        assert summary.written == 1
        (row,) = [orjson.loads(line) for line in rerun.read_bytes().splitlines()]
        assert row["url"] == str(tmp_path / "m" / "late.png") and row["idempotency_key"]
        write_file(tmp_path / "m" / "late.png", 777)
        config = replace(rehost_config(rerun, results, server), retry_failed=True)
        assert (await run(config)).exit_code == 0
        last = records(results)[-1]
        assert last["status"] == "succeeded" and last["key"] == row["idempotency_key"]
        assert last["rehost"]["size"] == 777


@pytest.mark.anyio
async def test_a_failed_rehost_of_an_exploded_record_keeps_the_items_index(tmp_path: Path) -> None:
    """A fal output record with two images, one of them missing: the failed item's record names its index in the
    record, as every other record of an exploded item does."""
    write_file(tmp_path / "ok.png", 100)
    manifest = tmp_path / "out.jsonl"
    manifest.write_bytes(orjson.dumps({"images": [{"url": "ok.png"}, {"url": "gone.png"}]}) + b"\n")
    results = tmp_path / "out.results.jsonl"
    async with running_fake_server(STRICT) as server:
        report = await run(rehost_config(manifest, results, server))
    assert report.exit_code == 1
    by_url = {r["item"]["url"]: r for r in records(results)}
    assert by_url["ok.png"]["status"] == "succeeded" and by_url["ok.png"]["index"] == 0
    assert by_url["gone.png"]["status"] == "failed" and by_url["gone.png"]["index"] == 1


@pytest.mark.anyio
async def test_a_rerun_of_unchanged_local_files_sends_no_request_at_all(tmp_path: Path) -> None:
    """A rerun whose rows are all local files an earlier run ingested checks them without the network: no
    preflight, no token, no upload, no registration (a nightly rerun of a local migration works with the API down);
    a changed file is still reported, and a new row still gets the preflight and its upload."""
    for name in ("a", "b", "c"):
        write_file(tmp_path / "media" / f"{name}.png", 1500, seed=ord(name))
    manifest = write_jsonl(tmp_path / "m.jsonl", ["media/a.png", "media/b.png", "media/c.png"])
    results = tmp_path / "m.results.jsonl"
    async with running_fake_server(STRICT) as server:
        assert server.storage is not None
        config = replace(rehost_config(manifest, results, server), preflight=True)
        assert (await run(config)).exit_code == 0
        requests, tokens = server.ledger.requests, server.storage.ledger.tokens_issued
        assert (requests, tokens) == (4, 1)  # the preflight and three registrations; one token
        again = await run(config)
        assert again.exit_code == 0 and again.stats.skipped_done == 3
        assert (server.ledger.requests, server.storage.ledger.tokens_issued) == (requests, tokens)
        write_file(tmp_path / "media" / "b.png", 1600, seed=9)  # edited since it was ingested
        changed = await run(config)
        assert changed.stats.skipped_done == 2 and server.ledger.requests == requests
        (record,) = [r for r in records(results)[3:] if r["item"]["url"] == "media/b.png"]
        assert record["error"]["type"] == "changed_since_ingested"
        write_file(tmp_path / "media" / "d.png", 1500, seed=4)
        write_jsonl(manifest, ["media/a.png", "media/b.png", "media/c.png", "media/d.png"])
        grown = await run(config)
        assert grown.stats.by_status.get("succeeded") == 1 and grown.stats.skipped_done == 2
        assert server.ledger.requests == requests + 2 and server.ledger.created == 4  # a preflight and d.png
