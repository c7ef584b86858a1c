"""The threaded test servers of ``tests.helpers.hostile_server`` end cleanly: a handler or a tunnel still running
when a block ends is cancelled and finished before the server's loop closes. A task left pending on a closed loop
is reported ("Task was destroyed but it is pending!") whenever the garbage collector meets it, in a later test.
"""

from __future__ import annotations

import gc
import logging
import socket
import time

import pytest

from tests.helpers.hostile_server import UPLOADS, ProxyServer, Reply, hostile_server

UPLOAD = (
    f"POST {UPLOADS} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nIdempotency-Key: k1\r\n"
    "Content-Length: 2\r\n\r\n{}"
).encode()


def destroyed_tasks(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The "Task was destroyed" reports so far, after a garbage collection (which is when they are made)."""
    gc.collect()
    return [r.getMessage() for r in caplog.records if "Task was destroyed" in r.getMessage()]


def test_a_handler_whose_client_left_is_finished_before_the_loop_closes(caplog: pytest.LogCaptureFixture) -> None:
    """A request whose client leaves while its answer is still 30 s away leaves no task pending once the block
    ends, and the block ends at once."""
    caplog.set_level(logging.ERROR, logger="asyncio")
    started = time.monotonic()
    with hostile_server(lambda hit: Reply(201, b"{}", delay=30)) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as client:
            client.sendall(UPLOAD)
            deadline = time.monotonic() + 5
            while not server.hits and time.monotonic() < deadline:
                time.sleep(0.01)
        time.sleep(0.1)  # the server sees the client gone: its handler is no connection's any more
    assert len(server.hits) == 1
    assert time.monotonic() - started < 5
    assert destroyed_tasks(caplog) == []


def test_a_tunnel_still_open_is_finished_before_the_proxys_loop_closes(caplog: pytest.LogCaptureFixture) -> None:
    """A CONNECT tunnel still open when the proxy's block ends leaves no task pending."""
    caplog.set_level(logging.ERROR, logger="asyncio")
    with socket.create_server(("127.0.0.1", 0)) as upstream:
        upstream.settimeout(5)
        port = upstream.getsockname()[1]
        proxy = ProxyServer()
        with proxy.running(), socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as client:
            client.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            assert client.recv(100).startswith(b"HTTP/1.1 200")
            peer, _ = upstream.accept()
        peer.close()
    assert len(proxy.requests) == 1
    assert destroyed_tasks(caplog) == []
