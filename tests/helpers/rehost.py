"""Helpers for the rehost tests: a rehoster wired to a fake server, a foreign http host, a loopback S3, files."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from ingest.credentials import ApiKey
from ingest.fakeserver import FakeServer
from ingest.rehost import RehostConfig, Rehoster, RehostJournal, RehostOptions, StorageRetry, create_rehoster
from tests.helpers.net import serving

FAST_POLICY = StorageRetry(max_attempts=12, max_retry_time=60, backoff_initial=0.01, backoff_max=0.05)


def write_file(path: Path, size: int, *, seed: int = 0) -> str:
    """Write ``size`` pseudo-random bytes to ``path`` (1 MiB at a time); their sha256."""
    rng = random.Random(seed)
    digest = hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        left = size
        while left:
            block = rng.randbytes(min(left, 1 << 20))
            digest.update(block)
            out.write(block)
            left -= len(block)
    return digest.hexdigest()


@contextlib.asynccontextmanager
async def rehoster_for(
    server: FakeServer,
    journal_file: Path,
    *,
    options: RehostOptions | None = None,
    policy: StorageRetry = FAST_POLICY,
    upload_concurrency: int = 4,
    bwlimit: float | None = None,
) -> AsyncIterator[tuple[Rehoster, aiohttp.ClientSession]]:
    """A rehoster talking to ``server``'s storage, with its journal at ``journal_file``."""
    journal = RehostJournal(journal_file)
    journal.load()
    config = RehostConfig(
        storage_url=server.storage_url,
        upload_concurrency=upload_concurrency,
        bwlimit=bwlimit,
        options=options or RehostOptions(),
    )
    try:
        async with aiohttp.ClientSession() as session:
            rehoster = create_rehoster(
                session, ApiKey("fake-key"), config, journal=journal, policy=policy, rng=random.Random(0)
            )
            yield rehoster, session
    finally:
        journal.close()


async def fetch_sha256(session: aiohttp.ClientSession, url: str) -> str:
    """The sha256 of what ``url`` serves."""
    digest = hashlib.sha256()
    async with session.get(url) as resp:
        assert resp.status == 200, resp.status
        async for chunk in resp.content.iter_chunked(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.asynccontextmanager
async def foreign_host(root: Path) -> AsyncIterator[str]:
    """A second loopback http server (another CDN) serving the files under ``root``, with ETags; its base url."""

    async def serve(request: web.Request) -> web.StreamResponse:
        path = root / request.match_info["name"]
        if not path.is_file():
            raise web.HTTPNotFound()
        stat = path.stat()
        return web.FileResponse(path, headers={"ETag": f'"{stat.st_size}-{stat.st_mtime_ns}"'})

    app = web.Application()
    app.router.add_get("/media/{name}", serve)
    async with serving(app) as origin:
        yield f"{origin}/media"


@contextlib.contextmanager
def loopback_s3(bucket: str, objects: dict[str, bytes]) -> Iterator[dict[str, str]]:
    """A real S3 (moto's server) on 127.0.0.1 holding ``objects`` in ``bucket``; the environment to reach it."""
    import boto3  # type: ignore[import-untyped]  # no stubs; used only to fill the loopback bucket
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    try:
        client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        client.create_bucket(Bucket=bucket)
        for key, body in objects.items():
            client.put_object(Bucket=bucket, Key=key, Body=body)
        yield env
    finally:
        server.stop()


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set, restored afterwards."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
