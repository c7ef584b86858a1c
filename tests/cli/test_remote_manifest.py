"""``ingest run`` / ``validate`` of a manifest in a bucket (a real S3 on loopback) or behind a web server (http, or
https with a private CA)."""

from __future__ import annotations

import gzip
from pathlib import Path

import anyio
import orjson
import pytest

from ingest.fakeserver import FakeServer
from tests.helpers import KEY
from tests.helpers.cli import CliResult, clean_env, run_cli
from tests.helpers.hostile_server import tls_context
from tests.helpers.records import media_rows, read_results, run_records
from tests.helpers.rehost import loopback_s3
from tests.helpers.remote import web_files

pytestmark = pytest.mark.anyio

CSV = b"url,type\n" + b"".join(f"{row['url']},image\n".encode() for row in media_rows(6, prefix="csv"))
JSONL = b"".join(orjson.dumps(row) + b"\n" for row in media_rows(4, prefix="jsonl"))


async def ingest(*args: str, cwd: Path, env: dict[str, str] | None = None) -> CliResult:
    return await run_cli(*args, cwd=cwd, env=clean_env(FAL_KEY=KEY, **(env or {})))


def warned(done: CliResult, *names: str) -> list[str]:
    return [e["event"] for e in done.events() if e.get("event") in names]


async def test_a_run_from_s3_lands_every_row_once_and_a_rerun_sends_nothing(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """``ingest run s3://…/library.csv`` with no --results writes ``library.results.jsonl`` in the working directory,
    registers every row; the rerun registers nothing and warns of no foreign or misplaced results file."""
    with loopback_s3("lib", {"jobs/library.csv": CSV}) as env:
        args = ("run", "s3://lib/jobs/library.csv", "--base-url", fake_server.url, "--rate", "500")
        first = await ingest(*args, cwd=tmp_path, env=env)
        assert first.returncode == 0, first.stderr[-3000:]
        results = tmp_path / "library.results.jsonl"
        assert sorted(r["status"] for r in read_results(results)) == ["succeeded"] * 6
        assert {r["manifest"] for r in read_results(results)} == {"s3://lib/jobs/library.csv"}
        assert fake_server.ledger.stats()["created"] == 6
        again = await ingest(*args, cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert fake_server.ledger.stats()["created"] == 6 and fake_server.ledger.stats()["replayed"] == 0
    assert warned(again, "results.foreign", "results.elsewhere", "manifest.changed") == []
    identity = run_records(results)[0]["manifests"][0]
    assert identity["path"] == "s3://lib/jobs/library.csv" and identity["size"] == len(CSV)
    assert identity["head_sha256"]


async def test_a_gzipped_jsonl_manifest_over_http_runs_and_reruns(tmp_path: Path, fake_server: FakeServer) -> None:
    """A ``.jsonl.gz`` behind a web server (query string and all) runs once; a rerun, re-signed, sends nothing."""
    async with web_files({"exports/m.jsonl.gz": gzip.compress(JSONL)}) as web:
        base = ("--base-url", fake_server.url, "--rate", "500")
        first = await ingest("run", web.url("exports/m.jsonl.gz?sig=one"), *base, cwd=tmp_path)
        assert first.returncode == 0, first.stderr[-3000:]
        results = tmp_path / "m.results.jsonl"
        assert len(read_results(results)) == 4 and fake_server.ledger.stats()["created"] == 4
        again = await ingest("run", web.url("exports/m.jsonl.gz?sig=two"), *base, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert fake_server.ledger.stats()["created"] == 4
    assert warned(again, "results.foreign", "results.elsewhere") == []
    assert "sig=" not in results.read_text()  # a presigned URL's signature is not written down


async def test_validate_and_dry_run_read_a_remote_manifest(tmp_path: Path) -> None:
    """``ingest validate`` and ``ingest run --dry-run`` read an s3:// manifest and count its rows."""
    with loopback_s3("lib", {"library.csv": CSV}) as env:
        checked = await ingest("validate", "s3://lib/library.csv", cwd=tmp_path, env=env)
        dry = await ingest("run", "s3://lib/library.csv", "--dry-run", cwd=tmp_path, env=env)
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert "6 valid" in checked.stdout + checked.stderr
    assert dry.returncode == 0, dry.stderr[-3000:]


async def test_a_missing_or_unreachable_remote_manifest_is_exit_2_in_one_line(tmp_path: Path) -> None:
    """A missing object, a 404 and a closed port end ``run`` / ``validate`` with exit 2 and one line naming the
    URL; no traceback, nothing written."""
    with loopback_s3("lib", {}) as env:
        missing = await ingest("run", "s3://lib/nope.csv", "--base-url", "http://127.0.0.1:9/v1", cwd=tmp_path, env=env)
    async with web_files({}) as web:
        gone = await ingest("validate", web.url("gone.csv"), cwd=tmp_path)
    closed = await ingest("validate", "http://127.0.0.1:9/m.csv", cwd=tmp_path)
    for done, expected in (
        (missing, "s3://lib/nope.csv: no such object"),
        (gone, "gone.csv: not found (HTTP 404)"),
        (closed, "http://127.0.0.1:9/m.csv: cannot be reached"),
    ):
        assert done.returncode == 2, done.stderr[-3000:]
        assert expected in done.stderr and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert [path async for path in anyio.Path(tmp_path).iterdir()] == []


async def test_an_https_manifest_behind_a_private_ca_is_read_with_ca_bundle(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """An https manifest whose server's CA only ``--ca-bundle`` names is read by ``validate``, ``run --dry-run`` and
    ``run`` (its run record fingerprinted, so that a copy at another URL run into a fresh results file is known by
    its first bytes: ``results.elsewhere``); without the bundle, ``validate`` and ``--dry-run`` end with exit 2 and
    one line saying TLS failed and naming --ca-bundle."""
    context, cert = tls_context(tmp_path)
    trusting = ("--ca-bundle", str(cert))
    base = ("--base-url", fake_server.url, "--rate", "500")
    results = ("--results", str(tmp_path / "r.jsonl"))
    async with web_files({"m.jsonl": JSONL, "copy.jsonl": JSONL}, ssl_context=context) as web:
        untrusted = await ingest("validate", web.url("m.jsonl"), cwd=tmp_path)
        dry_untrusted = await ingest("run", web.url("m.jsonl"), "--dry-run", *base, *results, cwd=tmp_path)
        checked = await ingest("validate", web.url("m.jsonl"), *trusting, cwd=tmp_path)
        dry = await ingest("run", web.url("m.jsonl"), "--dry-run", *base, *results, *trusting, cwd=tmp_path)
        first = await ingest("run", web.url("m.jsonl"), *base, *results, *trusting, cwd=tmp_path)
        fresh = ("--results", str(tmp_path / "fresh.jsonl"))
        copy = await ingest("run", web.url("copy.jsonl"), *base, *fresh, *trusting, cwd=tmp_path)
    for done in (untrusted, dry_untrusted):
        assert done.returncode == 2, done.stderr[-3000:]
        assert "TLS failure" in done.stderr and "--ca-bundle" in done.stderr, done.stderr[-3000:]
        assert "Traceback" not in done.stderr
    assert checked.returncode == 0 and "4 valid" in checked.stdout, checked.stderr[-3000:]
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert first.returncode == 0 and copy.returncode == 0, first.stderr[-3000:] + copy.stderr[-3000:]
    assert fake_server.ledger.stats()["created"] == 4
    started = run_records(tmp_path / "r.jsonl")[0]
    assert started["manifests"][0]["head_sha256"] is not None
    assert warned(copy, "results.elsewhere") == ["results.elsewhere"]
