"""Running the fake Assets API on a loopback port: as a context manager (tests, demo) or forever (the CLI).

The server is quiet: no access log, and a connection dropped on purpose is not reported as an error.
Shutdown is quick, since a stalled request (``p_slow``) may be sleeping for half a minute: in-flight handlers
get a short grace period, then are cancelled.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import anyio
from aiohttp import web

from ingest.fakeserver.app import ADMIN_PATH, FAKE_API, FAKE_STORAGE, FakeAssetsApi, create_app
from ingest.fakeserver.config import FakeServerConfig
from ingest.fakeserver.ledger import Ledger
from ingest.fakeserver.storage import FakeStorage

SHUTDOWN_GRACE_S = 0.25  # how long in-flight requests may go on once the server stops, before being cancelled


@dataclass(frozen=True)
class FakeServer:
    """A listening fake server: where to reach it, and its ledger (the figures ``/_admin/stats`` reports)."""

    url: str  # the API root, e.g. "http://127.0.0.1:54321/v1"; the client appends /assets/uploads
    admin_url: str  # e.g. "http://127.0.0.1:54321/_admin"
    ledger: Ledger = field(repr=False)
    config: FakeServerConfig = field(repr=False)
    storage_url: str = ""  # the storage API's root, e.g. "http://127.0.0.1:54321" (--storage-url)
    storage: FakeStorage | None = field(default=None, repr=False)  # its files, tokens and ledger
    api: FakeAssetsApi | None = field(default=None, repr=False)  # the Assets API's state (tests swap its faults)


@contextlib.asynccontextmanager
async def running_fake_server(
    config: FakeServerConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[FakeServer]:
    """Start a fake server (on a free port when ``port`` is 0), yield it once it listens, stop it on exit."""
    config = config or FakeServerConfig()
    app = create_app(config)
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_GRACE_S,
        handler_cancellation=False,  # a client that gives up does not undo the upload, as on the real service
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        root = _http_root(runner.addresses[0])
        ledger = app[FAKE_API].ledger
        yield FakeServer(
            url=f"{root}/v1",
            admin_url=f"{root}{ADMIN_PATH}",
            ledger=ledger,
            config=config,
            storage_url=root,
            storage=app[FAKE_STORAGE],
            api=app[FAKE_API],
        )
    finally:
        with anyio.CancelScope(shield=True):  # stop listening even when the caller is being cancelled
            await runner.cleanup()


async def serve_forever(
    config: FakeServerConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    on_ready: Callable[[FakeServer], None] | None = None,
) -> None:
    """Run a fake server until cancelled; ``on_ready`` is called once it listens (to print its address)."""
    async with running_fake_server(config, host=host, port=port) as server:
        if on_ready is not None:
            on_ready(server)
        await anyio.sleep_forever()


def _http_root(address: tuple[str, int] | tuple[str, int, int, int]) -> str:
    host, port = address[0], address[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
