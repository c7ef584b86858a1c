"""Shared helpers for the pipeline, retry-table, CLI, secrets and memory tests.

- manifests: ``media_rows`` / ``write_jsonl`` / ``write_csv`` write small manifests to ``tmp_path``;
- in-process runs: ``make_config`` builds a ``RunConfig`` with fast retries, ``run`` runs it;
- ``ScriptedServer``: a tiny real aiohttp server on ``127.0.0.1:0`` whose answers a test scripts per
  ``Idempotency-Key`` and attempt, and which records every request it saw (a spy, not a mock);
- ``run_cli``: ``python -m ingest …`` in a subprocess with a clean environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import orjson
from aiohttp import web

from ingest.credentials import ApiKey
from ingest.fakeserver.assets import build_asset
from ingest.manifest.source import ManifestSource
from ingest.models import UploadRequest
from ingest.run.pipeline import RunConfig, RunReport, run_pipeline
from ingest.upload.options import ClientOptions
from ingest.upload.retry import RetryPolicy
from tests.helpers import KEY

FAST_POLICY = RetryPolicy(backoff_initial=0.01, backoff_max=0.05)

# -- in-process runs ----------------------------------------------------------------------------------------


def make_config(
    manifests: Sequence[Path],
    results: Path,
    base_url: str,
    *,
    concurrency: int = 4,
    rate: float = 1000.0,
    policy: RetryPolicy = FAST_POLICY,
    request_timeout: float = 10.0,
    max_response_bytes: int = 1 << 20,
    **options: Any,
) -> RunConfig:
    """A ``RunConfig`` for a test: fast retries, a high rate, small concurrency."""
    return RunConfig(
        sources=[ManifestSource.open(str(path)) for path in manifests],
        results_path=results,
        client=ClientOptions(
            base_url=base_url,
            concurrency=concurrency,
            request_timeout=request_timeout,
            connect_timeout=5.0,
            max_response_bytes=max_response_bytes,
        ),
        rate=rate,
        policy=policy,
        progress_interval=60.0,
        seed=1,
        **options,
    )


async def run(config: RunConfig, key: str = KEY) -> RunReport:
    """``run_pipeline`` with ``key``, bounded in time so that a hang fails instead of stalling the suite."""
    with anyio.fail_after(60):
        return await run_pipeline(config, ApiKey(key))


# -- a scriptable spy server --------------------------------------------------------------------------------


@dataclass
class Hit:
    """One request the scripted server received."""

    key: str | None  # its Idempotency-Key header
    attempt: int  # 1-based count of requests seen with this key, this one included
    body: dict[str, Any]  # the parsed JSON body
    authorization: str | None  # its Authorization header
    arrived: float  # time.monotonic() when the handler started
    answered: float | None = None  # time.monotonic() when the answer was handed to aiohttp


@dataclass(frozen=True)
class Reply:
    """What the scripted server answers: a status with a body and headers, after an optional delay."""

    status: int = 201
    body: bytes | None = None  # None: a valid 201 asset for the request, or a spec error envelope
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering
    drop: bool = False  # close the connection instead of answering
    chunked: bool = False  # send the body with chunked transfer encoding (no Content-Length)
    content_type: str = "application/json"


def error_body(status: int, message: str, error_type: str = "validation_error") -> bytes:
    """The spec's standard error envelope."""
    return orjson.dumps({"error": {"type": error_type, "message": message, "request_id": f"req-{status}"}})


def asset_body(body: dict[str, Any]) -> bytes:
    """A valid 201 body for the upload ``body``."""
    upload = UploadRequest.model_validate(body)
    return orjson.dumps({"asset": build_asset(upload, request_id="req-scripted", created_at="2026-01-01T00:00:00Z")})


Script = Callable[[Hit], Reply]


def _probe_answer() -> Reply:
    """What the API answers an empty JSON body: 422, the body is not an upload."""
    return Reply(422, body=error_body(422, "Invalid request body: url: Field required"))


class ScriptedServer:
    """A real HTTP server whose answers come from ``script(hit)``; it keeps every ``Hit`` and the peak of
    requests in flight at once."""

    def __init__(self, script: Script, probe_script: Callable[[], Reply] | None = None) -> None:
        self.script = script  # decides each answer
        self.probe_script = probe_script or _probe_answer  # answers the client's empty-body probes
        self.hits: list[Hit] = []  # every request, in arrival order
        self.probes = 0  # empty-body probes received (not in hits)
        self.in_flight = 0  # requests being handled now
        self.peak_in_flight = 0  # the most requests ever handled at once
        self.url = ""  # the API root, set once listening

    def __repr__(self) -> str:
        return f"ScriptedServer(hits={len(self.hits)}, peak_in_flight={self.peak_in_flight})"

    def hits_for(self, key: str) -> list[Hit]:
        """The requests that carried ``key``."""
        return [hit for hit in self.hits if hit.key == key]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        key = request.headers.get("Idempotency-Key")
        if key is None and body == {}:
            # The client's probe (preflight, outage checks): answered as the API does (or as ``probe_script`` says),
            # kept apart from the hits.
            self.probes += 1
            probe = Hit(None, self.probes, body, request.headers.get("Authorization"), time.monotonic())
            reply = self.probe_script()
            if reply.delay:
                await asyncio.sleep(reply.delay)
            return await self._answer(request, probe, reply)
        attempt = 1 + sum(1 for hit in self.hits if hit.key == key)
        hit = Hit(key, attempt, body, request.headers.get("Authorization"), time.monotonic())
        self.hits.append(hit)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            reply = self.script(hit)
            if reply.delay:
                await asyncio.sleep(reply.delay)
            return await self._answer(request, hit, reply)
        finally:
            self.in_flight -= 1
            hit.answered = time.monotonic()

    async def _answer(self, request: web.Request, hit: Hit, reply: Reply) -> web.StreamResponse:
        if reply.drop:
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)  # never reaches the client: the connection is gone
        payload = reply.body
        if payload is None:
            payload = asset_body(hit.body) if reply.status == 201 else error_body(reply.status, "scripted")
        if not reply.chunked:
            return web.Response(
                status=reply.status, body=payload, headers=dict(reply.headers), content_type=reply.content_type
            )
        response = web.StreamResponse(status=reply.status, headers=dict(reply.headers))
        response.content_type = reply.content_type
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(payload), 512):
            await response.write(payload[start : start + 512])
        await response.write_eof()
        return response


@contextlib.asynccontextmanager
async def scripted_server(
    script: Script, probe_script: Callable[[], Reply] | None = None
) -> AsyncIterator[ScriptedServer]:
    """A ``ScriptedServer`` listening on a free loopback port for the duration of the block."""
    server = ScriptedServer(script, probe_script)
    app = web.Application()
    app.router.add_post("/v1/assets/uploads", server.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.25)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        server.url = f"http://{host}:{port}/v1"
        yield server
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
