"""A small hostile Assets API for the issue-9 tests: it misbehaves exactly as a test tells it to.

``hostile_server(answer)`` runs an aiohttp app on ``127.0.0.1:0`` in a thread of its own (so a test may drive real
``ingest`` subprocesses with blocking waits and real signals while it serves), records every request it saw
(``Hit``), and answers each one with ``answer(hit)`` — a ``Reply``. The catalogue below builds the answers the
judge used: a 200 HTML page, a 201 that is not an asset, the key echoed back (raw, ``\\u``-escaped, in a header),
redirects, 408, terminal escapes in an error message; and ``Idempotent``, a server-side ledger that holds a key
"in progress" while a slow first answer (35 s) is still being computed, answers 409 "still being processed" to
the same key meanwhile, then replays the stored 201 — whether or not its first client is still alive.

``tls_context(tmp)`` makes a self-signed certificate for the TLS tests; ``ProxyServer`` is a tiny forward proxy
(absolute-form http requests and ``CONNECT`` tunnels) that records what it was asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from ingest.fakeserver.assets import build_asset
from ingest.models import UploadRequest

UPLOADS = "/v1/assets/uploads"


@dataclass
class Hit:
    """One request the server received."""

    key: str | None  # its Idempotency-Key
    attempt: int  # 1-based count of requests seen with this key, this one included
    body: dict[str, Any]
    headers: dict[str, str]
    arrived: float  # time.monotonic()


@dataclass(frozen=True)
class Reply:
    """An answer: status, body, headers, after ``delay`` seconds (the handler keeps running if the client leaves)."""

    status: int = 201
    body: bytes | None = None  # None: a valid 201 asset for the request
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    content_type: str = "application/json"


Answer = Callable[[Hit], "Reply | Any"]  # a Reply, or an awaitable of one


def asset(body: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A valid asset for the upload ``body`` (fields in ``extra`` override)."""
    built = build_asset(UploadRequest.model_validate(body), request_id="req-hostile", created_at="2026-01-01T00:00:00Z")
    return {**built, **extra}


def asset_reply(body: dict[str, Any], **extra: Any) -> Reply:
    """A 201 with a valid asset."""
    return Reply(201, orjson.dumps({"asset": asset(body, **extra)}))


def error_reply(status: int, message: str, error_type: str = "validation_error", **headers: str) -> Reply:
    """The spec's error envelope."""
    body = orjson.dumps({"error": {"type": error_type, "message": message, "request_id": f"req-{status}"}})
    return Reply(status, body, headers)


def json_escaped(text: str) -> str:
    """``text`` with every character written as a JSON ``\\uXXXX`` escape (what a server may legally send)."""
    return "".join(f"\\u{ord(ch):04x}" for ch in text)


class HostileServer:
    """The running server: its URL and every ``Hit``."""

    def __init__(self, answer: Answer, probe: Reply | None = None) -> None:
        self.answer = answer
        self.probe = probe  # the answer to the preflight probe; None: a 422, as the API gives
        self.hits: list[Hit] = []
        self.url = ""  # http(s)://127.0.0.1:port/v1 once listening
        self.port = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"HostileServer(url={self.url!r}, hits={len(self.hits)})"

    def hits_for(self, key: str | None) -> list[Hit]:
        with self._lock:
            return [hit for hit in self.hits if hit.key == key]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = {}
        key = request.headers.get("Idempotency-Key")
        if key is None and body == {}:
            # The run's preflight probe (an empty body, no key): answered as the API would, and not a hit, so
            # that a test's answer is about items (a test of the probe itself uses ``probe=``).
            probe = self.probe or error_reply(422, "url: field required")
            return self._respond(probe, body)
        with self._lock:
            attempt = 1 + sum(1 for hit in self.hits if hit.key == key)
            hit = Hit(key, attempt, body, dict(request.headers), time.monotonic())
            self.hits.append(hit)
        reply = self.answer(hit)
        if asyncio.iscoroutine(reply):
            reply = await reply
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return self._respond(reply, body)

    def _respond(self, reply: Reply, body: dict[str, Any]) -> web.Response:
        payload = reply.body if reply.body is not None else orjson.dumps({"asset": asset(body)})
        response = web.Response(status=reply.status, body=payload, headers=dict(reply.headers))
        response.content_type = reply.content_type
        return response


class Idempotent:
    """A faithful idempotency ledger with slow first answers: ``answer`` is a hostile-server ``Answer``.

    A key's first request is held "in progress" for ``slow_s(hit)`` seconds, then its asset is created and stored
    (also when the client that sent it is gone); the same key meanwhile gets 409 "still being processed"; later it
    gets the stored 201 again.
    """

    def __init__(self, slow_s: Callable[[Hit], float]) -> None:
        self.slow_s = slow_s
        self.created: dict[str, int] = {}  # key -> assets created for it (must stay 1)
        self.stored: dict[str, bytes] = {}  # key -> its 201 body
        self.in_progress: set[str] = set()
        self.conflicts = 0  # 409s answered

    async def answer(self, hit: Hit) -> Reply:
        key = hit.key or ""
        if key in self.stored:
            return Reply(201, self.stored[key])
        if key in self.in_progress:
            self.conflicts += 1
            return error_reply(409, "a request with this Idempotency-Key is still being processed", "conflict")
        self.in_progress.add(key)
        try:
            await asyncio.sleep(self.slow_s(hit))
            self.created[key] = self.created.get(key, 0) + 1
            self.stored[key] = orjson.dumps({"asset": asset(hit.body)})
        finally:
            self.in_progress.discard(key)
        return Reply(201, self.stored[key])


def _close(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what still runs on ``loop`` and let it finish, then close it, as ``asyncio.run`` does. The runner's
    cleanup waits only for the handlers of connections still open: a handler whose client left mid-answer (a
    killed run's 35 s request) stays pending, as does a tunnel still open, and a task left pending on a closed loop
    is reported ("Task was destroyed but it is pending!") whenever the garbage collector meets it, in a later test.
    """
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


@contextlib.contextmanager
def _serve_in_thread(app: web.Application, ssl_context: ssl.SSLContext | None) -> Iterator[int]:
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
    ready: list[int] = []
    started = threading.Event()

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        ready.append(runner.addresses[0][1])
        started.set()

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        _close(loop)

    thread = threading.Thread(target=main, name="hostile-server", daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("hostile server did not start")
    try:
        yield ready[0]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@contextlib.contextmanager
def hostile_server(
    answer: Answer, *, ssl_context: ssl.SSLContext | None = None, probe: Reply | None = None
) -> Iterator[HostileServer]:
    """A ``HostileServer`` answering ``answer(hit)`` on a free loopback port, for the duration of the block."""
    server = HostileServer(answer, probe)
    app = web.Application()
    app.router.add_post(UPLOADS, server.handle)
    with _serve_in_thread(app, ssl_context) as port:
        server.port = port
        scheme = "https" if ssl_context is not None else "http"
        server.url = f"{scheme}://127.0.0.1:{port}/v1"
        yield server


def tls_context(tmp: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context with a fresh self-signed certificate for 127.0.0.1, and the certificate's path."""
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", f"subjectAltName=IP:127.0.0.1,DNS:{PROXIED_HOST}"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context, cert


PROXIED_HOST = "api.ingest-test.invalid"  # resolves nowhere: only through ``ProxyServer`` does it reach loopback


class ProxyServer:
    """A forward proxy on loopback: relays absolute-form http requests and ``CONNECT`` tunnels, recording each
    request line and its headers (so a test can see whether the key crossed it in clear). Every target host is
    reached at 127.0.0.1, so a URL naming ``PROXIED_HOST`` works only through the proxy."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []  # (request line, headers)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line, *rest = head.decode("latin-1").split("\r\n")
            headers = dict(h.split(": ", 1) for h in rest if ": " in h)
            self.requests.append((line, headers))
            method, target, _ = line.split(" ", 2)
            if method == "CONNECT":
                _host, port = target.rsplit(":", 1)
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
            else:
                rest_target = target.split("://", 1)[1]
                hostport, _, path = rest_target.partition("/")
                _host, port = hostport.rsplit(":", 1)
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", int(port))
                up_writer.write(head.replace(target.encode(), b"/" + path.encode(), 1))
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    @contextlib.contextmanager
    def running(self) -> Iterator[ProxyServer]:
        loop = asyncio.new_event_loop()
        started = threading.Event()
        holder: list[asyncio.Server] = []

        async def start() -> None:
            server = await asyncio.start_server(self._client, "127.0.0.1", 0)
            holder.append(server)
            self.port = server.sockets[0].getsockname()[1]
            started.set()

        def main() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(start())
            loop.run_forever()
            holder[0].close()
            _close(loop)

        thread = threading.Thread(target=main, name="proxy", daemon=True)
        thread.start()
        started.wait(10)
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.close()


# -- running the real command line against it ---------------------------------------------------------------

KEY = "sk_hostile_Zq8Lr3Vn6Tw1"  # distinctive, so a test can grep for it
ROWS = 3


@dataclass(frozen=True)
class Done:
    """A finished ``python -m ingest`` process."""

    code: int
    stdout: str
    stderr: str

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The JSON log events of stderr (called ``name``, if given)."""
        found = []
        for line in self.stderr.splitlines():
            if line.startswith("{"):
                with contextlib.suppress(orjson.JSONDecodeError):
                    event = orjson.loads(line)
                    if name is None or event.get("event") == name:
                        found.append(event)
        return found


def cli_env(**extra: str) -> dict[str, str]:
    """Our environment minus ``FAL_*``/``INGEST_*``/proxy variables, plus the test key and ``extra``."""
    import os

    proxies = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_", "INGEST_")) and k.lower() not in proxies}
    env.pop("PYTHONWARNINGS", None)
    env["FAL_KEY"] = KEY
    env.update(extra)
    return env


def ingest(*args: str | Path, env: Mapping[str, str] | None = None, timeout: float = 90) -> Done:
    """Run ``python -m ingest *args`` to its end (bounded)."""
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "ingest", *map(str, args)],
        env=dict(env if env is not None else cli_env()),
        capture_output=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
        cwd="/",  # the installed package, not whatever ``ingest`` directory the caller stands in
    )
    return Done(done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"))


def write_manifest(path: Path, count: int = ROWS, *, prefix: str = "h") -> Path:
    """A JSONL manifest of ``count`` distinct fal-hosted images."""
    with path.open("wb") as file:
        for i in range(count):
            file.write(orjson.dumps({"url": f"https://v3.fal.media/files/{prefix}/{i:04d}.png", "type": "image"}))
            file.write(b"\n")
    return path


def run_args(manifest: Path, results: Path, url: str, *extra: str | Path) -> list[str | Path]:
    """``ingest run`` with fast retries and JSON logs against ``url``."""
    return [
        "run", manifest, "--results", results, "--base-url", url, "--rate", "1000", "--concurrency", "2",
        "--max-attempts", "3", "--backoff-initial", "0.01", "--backoff-max", "0.05", "--log-format", "json",
        "--progress", "off", *extra,
    ]  # fmt: skip


def records(path: Path) -> list[dict[str, Any]]:
    """Every item record of a results file (a run's own records, run_started / run_ended, are left out)."""
    every = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    return [record for record in every if "record" not in record]
