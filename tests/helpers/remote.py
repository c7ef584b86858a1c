"""A loopback web server for remote-manifest tests: serves bytes by name, with or without ``Range``, and records
what it was asked (a spy, not a mock)."""

from __future__ import annotations

import contextlib
import hashlib
import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web

from tests.helpers.net import serving

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@dataclass
class WebFiles:
    """The files the server holds (name → bytes), whether it honours ``Range``, and the requests it saw."""

    files: dict[str, bytes] = field(default_factory=dict)
    ranges: bool = True
    seen: list[tuple[str, str | None]] = field(default_factory=list)  # (name, Range header)
    base: str = ""  # http://127.0.0.1:PORT, once started

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:16] + '"'


@contextlib.asynccontextmanager
async def web_files(
    files: dict[str, bytes], *, ranges: bool = True, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[WebFiles]:
    """A real aiohttp server on 127.0.0.1 serving ``files`` at ``/<name>`` (over https with ``ssl_context``)."""
    state = WebFiles(dict(files), ranges)

    async def serve(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        state.seen.append((name, request.headers.get("Range")))
        body = state.files.get(name)
        if body is None:
            raise web.HTTPNotFound()
        if name.startswith("secret"):
            raise web.HTTPForbidden()
        headers = {"ETag": _etag(body)}
        match = _RANGE.fullmatch(request.headers.get("Range", ""))
        if not state.ranges or match is None:
            return web.Response(body=body, headers=headers)
        if_match = request.headers.get("If-Match")
        if if_match is not None and if_match != headers["ETag"]:
            raise web.HTTPPreconditionFailed()
        start = int(match.group(1))
        end = min(int(match.group(2)) + 1 if match.group(2) else len(body), len(body))
        if start >= len(body):
            raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{len(body)}"})
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(body)}"
        return web.Response(status=206, body=body[start:end], headers=headers)

    app = web.Application()
    app.router.add_get("/{name:.+}", serve)
    async with serving(app, ssl_context=ssl_context) as origin:
        state.base = origin
        yield state
