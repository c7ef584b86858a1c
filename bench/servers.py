"""Canned-response servers on loopback, each in its own process so it gets its own core.

Every ``POST /v1/assets/uploads`` gets the same valid 201 body (``canned_body()``, built by the fake server's own
``build_asset`` so it matches the spec). Two kinds:

- **nginx** (``return 201 '<json>'``), when an ``nginx`` binary is on ``PATH`` or in ``/usr/sbin``: the fastest
  server there is for this, so the client is always the bottleneck;
- **python asyncio** (this module run as a script): a ``Protocol``-based HTTP/1.1 keep-alive server that parses only
  the request head and ``Content-Length``. It is the fallback for nginx, and the only kind that can wait a fixed
  delay before answering (latency-bound rows) and record arrival times (``GET /stats``: the throughput, latency,
  rate-limiter and resume rows).

An arrival is recorded for every ``POST /v1/assets/uploads`` that carries an ``Idempotency-Key``, once its body is in:
every item any client here sends has one, and ``ingest``'s preflight probe (an empty body, no key:
``AssetsClient.probe``) has none, so the probe is counted apart (``probes``) and never enters the window of an
items/s figure. Recording is one ``list.append`` per upload. Arrival times are ``time.monotonic()`` of the server
process; on Linux that is the system-wide ``CLOCK_MONOTONIC``, so the harness can compare them with its own clock.

Run standalone: ``python bench/servers.py --port 0 [--delay 0.1] [--record]`` prints ``listening PORT`` when ready.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

UPLOAD_PATH = b"/v1/assets/uploads"
STATS_PATH = b"/stats"
MAX_RECORDED = 2_000_000  # arrival times kept at most (16 MB of floats); the largest run records 20,000
MAX_HEAD = 64 * 1024  # a longer request head is refused
START_TIMEOUT_S = 30.0  # how long a server may take to start listening (a loaded 2-core machine: > 10 s seen)


def canned_body() -> bytes:
    """A valid 201 body for an image upload; built without importing ``ingest`` at server start-up."""
    from ingest.fakeserver.assets import build_asset
    from ingest.models import UploadRequest

    upload = UploadRequest(url="https://v3b.fal.media/files/bench/canned.png", type="image")
    asset = build_asset(
        upload, request_id="019e6d0a-e5be-7b82-b329-35ae64296902", created_at="2026-05-23T20:00:00.000Z"
    )
    asset["vector_id"] = "b1a2b4a5-cb89-51dc-a108-6dbfd8e742fc"  # fixed, so every run serves the same bytes
    return json.dumps({"asset": asset}, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Server:
    """A running server: what it is, where the API root is, and (python kind) where its arrival log is."""

    kind: str  # e.g. "nginx 1.22.1" or "python asyncio"
    base_url: str  # the API root the client is given, e.g. http://127.0.0.1:8080/v1
    stats_url: str | None  # GET → {"count": n, "probes": n, "times": [...]}; ?reset=1 clears; None for nginx


# -- discovery and process control (harness side) ---------------------------------------------------------------


def find_nginx() -> str | None:
    """The nginx binary, if installed (``/usr/sbin`` is often not on a user's ``PATH``)."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:/usr/local/nginx/sbin")


def nginx_version(binary: str) -> str:
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10, check=False)
    text = (out.stderr or out.stdout).strip()
    return text.split("/", 1)[1].split()[0] if "/" in text else "?"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {START_TIMEOUT_S}s")


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_buffer_size 64k;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /v1/assets/uploads {{
            default_type application/json;
            add_header x-request-id 019e6d0a-e5be-7b82-b329-35ae64296902;
            return 201 '{body}';
        }}
        location / {{ return 404; }}
    }}
}}
"""


def _nginx_literal(body: bytes) -> str:
    text = body.decode()
    if any(ch in text for ch in "'$\\"):
        raise ValueError("the canned body cannot be written as an nginx string literal")
    return text


@contextlib.contextmanager
def nginx_server(binary: str) -> Iterator[Server]:
    """nginx, one worker, answering the canned body; stopped (and its temp dir removed) on exit."""
    with tempfile.TemporaryDirectory(prefix="bench-nginx-") as tmp:
        for attempt in range(3):  # the free port may be taken between our probe and nginx's bind
            port = free_port()
            conf = Path(tmp, "nginx.conf")
            conf.write_text(NGINX_CONF.format(dir=tmp, port=port, body=_nginx_literal(canned_body())))
            argv = [binary, "-p", tmp, "-e", f"{tmp}/error.log", "-c", str(conf)]
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                _wait_listening(port, proc, "nginx")
            except RuntimeError:
                _stop(proc, signal.SIGQUIT)
                if attempt == 2:
                    raise
                continue
            try:
                yield Server(f"nginx {nginx_version(binary)}", f"http://127.0.0.1:{port}/v1", None)
            finally:
                _stop(proc, signal.SIGQUIT)  # graceful: lets the worker close its connections
            return


@contextlib.contextmanager
def python_server(*, delay: float = 0.0, record: bool = False) -> Iterator[Server]:
    """The asyncio server of this module in a child process."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--port", "0", "--delay", str(delay)]
    if record:
        argv.append("--record")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_server_env())
    try:
        assert proc.stdout is not None
        line = _read_ready_line(proc)
        port = int(line.split()[1])
        kind = "python asyncio" + (f", {delay * 1000:.0f} ms delay" if delay else "")
        stats = f"http://127.0.0.1:{port}/stats" if record else None
        yield Server(kind, f"http://127.0.0.1:{port}/v1", stats)
    finally:
        _stop(proc)
        if proc.stdout is not None:
            proc.stdout.close()


def _server_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)  # so the child can import ingest for canned_body()
    env["PYTHONPATH"] = root + os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else root
    return env


def _read_ready_line(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    deadline = time.monotonic() + START_TIMEOUT_S
    buffer = b""
    while time.monotonic() < deadline:
        chunk = proc.stdout.read()
        if chunk:
            buffer += chunk
            if b"\n" in buffer:
                return buffer.split(b"\n", 1)[0].decode()
        if proc.poll() is not None:
            raise RuntimeError(f"python server exited with {proc.returncode} before listening")
        time.sleep(0.02)
    raise RuntimeError("python server did not report listening in time")


@contextlib.contextmanager
def fast_server(*, prefer_nginx: bool = True) -> Iterator[Server]:
    """The fastest canned server available: nginx if installed, else the python one."""
    binary = find_nginx() if prefer_nginx else None
    if binary is not None:
        with nginx_server(binary) as server:
            yield server
    else:
        with python_server() as server:
            yield server


def fetch_arrivals(server: Server, *, reset: bool = True) -> list[float]:
    """The server's recorded arrival times of keyed uploads (monotonic seconds, in arrival order), clearing them
    (and the counts) when ``reset``."""
    if server.stats_url is None:
        raise ValueError(f"{server.kind} does not record arrivals")
    url = server.stats_url + ("?reset=1" if reset else "")
    with urllib.request.urlopen(url, timeout=10) as resp:  # loopback only: built from 127.0.0.1 above
        return list(json.loads(resp.read())["times"])


# -- the asyncio server (server process side) ---------------------------------------------------------------------


class _State:
    """What every connection of the server shares."""

    def __init__(self, *, delay: float, record: bool, body: bytes) -> None:
        self.delay = delay  # seconds to wait before answering an upload
        self.record = record  # whether to keep arrival times
        self.times: list[float] = []  # arrival times (monotonic) of uploads with an Idempotency-Key, ≤ MAX_RECORDED
        self.count = 0  # uploads answered since the last reset, keyed or not
        self.probes = 0  # of those, uploads without an Idempotency-Key (ingest's preflight), not in ``times``
        self.created = _response(201, "Created", body, b"x-request-id: 019e6d0a-e5be-7b82-b329-35ae64296902\r\n")
        self.not_found = _response(404, "Not Found", b'{"error":{"type":"not_found","message":"no such path"}}')


def _response(status: int, reason: str, body: bytes, extra: bytes = b"") -> bytes:
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + extra + b"\r\n" + body


class _Connection(asyncio.Protocol):
    """One keep-alive connection: parse heads and Content-Length, skip bodies, answer canned bytes."""

    def __init__(self, state: _State) -> None:
        self.state = state
        self.buffer = bytearray()  # bytes received and not yet parsed
        self.pending: tuple[bytes, bytes, bool, bool] | None = None  # (method, target, close, keyed), body to come
        self.body_left = 0  # body bytes of the pending request still to skip
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        for _ in range(10_000):  # bounded: at most this many pipelined requests per read
            if self.pending is None and not self._parse_head():
                return
            if len(self.buffer) < self.body_left:
                return
            del self.buffer[: self.body_left]
            method, target, close, keyed = self.pending  # type: ignore[misc]
            self.pending, self.body_left = None, 0
            self._answer(method, target, close, keyed)

    def _parse_head(self) -> bool:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD and self.transport is not None:
                self.transport.close()
            return False
        head = bytes(self.buffer[:end]).lower()
        del self.buffer[: end + 4]
        request_line = head.split(b"\r\n", 1)[0].split(b" ")
        method, target = request_line[0], request_line[1] if len(request_line) > 1 else b"/"
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line.startswith(b"content-length:"):
                length = int(line[15:].strip() or b"0")
        keyed = self.state.record and b"\r\nidempotency-key:" in head
        self.pending = (method, target, b"\r\nconnection: close" in head, keyed)
        self.body_left = length
        if length and b"\r\nexpect: 100-continue" in head and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl asks before sending a large body
        return True

    def _answer(self, method: bytes, target: bytes, close: bool, keyed: bool) -> None:
        state = self.state
        if method == b"post" and target == UPLOAD_PATH.lower():
            state.count += 1
            if keyed and len(state.times) < MAX_RECORDED:
                state.times.append(time.monotonic())
            elif state.record and not keyed:
                state.probes += 1
            if state.delay > 0:
                asyncio.get_running_loop().call_later(state.delay, self._send, state.created, close)
            else:
                self._send(state.created, close)
        elif method == b"get" and target.startswith(STATS_PATH):
            body = json.dumps({"count": state.count, "probes": state.probes, "times": state.times}).encode()
            if target.endswith(b"reset=1"):
                state.times, state.count, state.probes = [], 0, 0
            self._send(_response(200, "OK", body), close)
        else:
            self._send(state.not_found, close)

    def _send(self, response: bytes, close: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(response)
        if close:
            self.transport.close()


async def _serve(port: int, state: _State) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(state), "127.0.0.1", port, backlog=4096, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening {bound}", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="canned Assets API upload server (loopback only)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait before each 201")
    parser.add_argument("--record", action="store_true", help="keep arrival times of keyed uploads for GET /stats")
    args = parser.parse_args(argv)
    state = _State(delay=args.delay, record=args.record, body=canned_body())
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port, state))
    return 0


if __name__ == "__main__":
    sys.exit(main())
