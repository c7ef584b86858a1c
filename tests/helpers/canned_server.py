"""A minimal Assets API for load tests: every ``POST /v1/assets/uploads`` gets the same valid 201 at once.

Unlike the embedded fake server it keeps no ledger (which would grow with every request), so a test can push
hundreds of thousands of requests through it in a separate process. Run it as a script::

    python tests/helpers/canned_server.py   # prints "PORT <n>" on stdout once it listens; stops on SIGTERM
"""

from __future__ import annotations

import asyncio
import signal

import orjson
from aiohttp import web

from ingest.fakeserver.assets import build_asset
from ingest.models import UploadRequest

CANNED = orjson.dumps(
    {
        "asset": build_asset(
            UploadRequest(url="https://v3b.fal.media/files/b/canned/asset.png", type="image"),
            request_id="req-canned",
            created_at="2026-01-01T00:00:00Z",
        )
    }
)


async def upload(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=201, body=CANNED, content_type="application/json")


async def main() -> None:
    app = web.Application()
    app.router.add_post("/v1/assets/uploads", upload)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    print(f"PORT {runner.addresses[0][1]}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
