"""Loopback ports for servers a test starts in another process, and ``serving``: an in-process aiohttp app on
127.0.0.1 (port 0), over TLS when given a server context."""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import AsyncIterator

from aiohttp import web


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serving(app: web.Application, *, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """``app`` served on 127.0.0.1 at a free port until the block ends; its origin (``http://127.0.0.1:PORT``, or
    ``https://…`` with ``ssl_context``)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"{'https' if ssl_context else 'http'}://{host}:{port}"
    finally:
        await runner.cleanup()
