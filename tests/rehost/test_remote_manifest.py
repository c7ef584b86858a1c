"""Rows of a manifest read from a bucket: a relative path names an object beside the manifest, and is rehosted."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import aiohttp
import orjson
import pytest

from ingest.fakeserver import FakeServerConfig, running_fake_server
from ingest.manifest.source import ManifestOptions, ManifestSource
from ingest.rehost import RehostConfig, RehostOptions
from tests.helpers.pipeline import make_config, run
from tests.helpers.records import read_results
from tests.helpers.rehost import environment, fetch_sha256, loopback_s3


@pytest.mark.anyio
async def test_relative_rows_of_a_bucket_manifest_are_objects_beside_it(tmp_path: Path) -> None:
    """``media/a.png`` in ``s3://lib/jobs/m.jsonl`` is ``s3://lib/jobs/media/a.png``: uploaded, registered with the
    storage's url, bytes matching; an absolute ``s3://`` row works as before; the rerun uploads nothing."""
    a, b = b"a bytes " * 300, b"b bytes " * 400
    manifest = b"".join(orjson.dumps({"url": url}) + b"\n" for url in ("media/a.png", "s3://lib/other/b.png"))
    objects = {"jobs/m.jsonl": manifest, "jobs/media/a.png": a, "other/b.png": b}
    results = tmp_path / "m.results.jsonl"
    with loopback_s3("lib", objects) as env, environment(env):
        async with running_fake_server(FakeServerConfig(strict_urls=True)) as server:
            config = make_config(
                [],
                results,
                server.url,
                rehost_mode="auto",
                rehost=RehostConfig(storage_url=server.storage_url, options=RehostOptions()),
                manifest_options=ManifestOptions(allow_sources=True),
            )
            config = replace(config, sources=[ManifestSource.open("s3://lib/jobs/m.jsonl")])
            report = await run(config)
            records = read_results(results)
            assert report.exit_code == 0, records
            by_row = {r["item"]["url"]: r for r in records}
            assert by_row["media/a.png"]["rehost"]["source"] == "s3://lib/jobs/media/a.png"
            async with aiohttp.ClientSession() as session:
                for url, body in (("media/a.png", a), ("s3://lib/other/b.png", b)):
                    rehost = by_row[url]["rehost"]
                    assert rehost["kind"] == "s3" and by_row[url]["asset"]["url"] == rehost["url"]
                    assert await fetch_sha256(session, rehost["url"]) == hashlib.sha256(body).hexdigest()
            assert server.storage is not None
            uploads = server.storage.ledger.single_uploads
            again = await run(config)
            assert again.exit_code == 0 and again.stats.skipped_done == 2
            assert server.storage.ledger.single_uploads == uploads and server.ledger.created == 2
