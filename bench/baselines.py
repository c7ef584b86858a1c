"""The bare clients ``ingest run`` is measured against, each run as its own process by the harness.

``python bench/baselines.py aiohttp|uvloop|httpx --url URL --requests FILE --concurrency C`` sends one
``POST`` per line of ``FILE`` (``<idempotency key>\\t<JSON body>``, the exact bytes ``ingest`` sends for the same
manifest) with the same headers, from ``C`` tasks pulling from one shared iterator over the file, on one session. No
retries, no results file, no limiter, no bookkeeping beyond counting statuses: the ceiling of the stack.

It prints one JSON line: ``{"items": n, "ok": n_201, "elapsed_s": s, "items_per_s": r}``, timed from just before
the client library's import and the session to the last response. That is the loop's own clock, not the window the
gated rows use: the harness measures items/s for this loop and for ``ingest`` alike at the server (first upload's
arrival to last answer, ``bench.sections.items_per_s_at_server``), and shows this figure beside it, ungated.

Only the standard library is imported at the top, so that a Python that has httpx but not this project's
dependencies can run the httpx loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Iterator
from typing import IO, Any

HEADERS = {
    "Authorization": "Key bench-key",
    "User-Agent": "bench-baseline",
    "Content-Type": "application/json",
    "Accept": "application/json",
}
TIMEOUT_S = 60.0  # per request; a stuck baseline must not hang the harness


def requests_from(file: IO[bytes]) -> Iterator[tuple[str, bytes]]:
    """(key, body) per line of a requests file, read lazily."""
    for line in file:
        key, _, body = line.rstrip(b"\n").partition(b"\t")
        yield key.decode(), body


async def aiohttp_loop(url: str, items: Iterator[tuple[str, bytes]], concurrency: int) -> dict[str, int]:
    import aiohttp

    statuses: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            for key, body in items:
                headers = {**HEADERS, "Idempotency-Key": key}
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    statuses[str(resp.status)] = statuses.get(str(resp.status), 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


async def httpx_loop(url: str, items: Iterator[tuple[str, bytes]], concurrency: int) -> dict[str, int]:
    import httpx  # type: ignore[import-not-found,unused-ignore]  # optional: only this peer needs it

    statuses: dict[str, int] = {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=TIMEOUT_S) as client:

        async def worker() -> None:
            for key, body in items:
                resp = await client.post(url, content=body, headers={**HEADERS, "Idempotency-Key": key})
                statuses[str(resp.status_code)] = statuses.get(str(resp.status_code), 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


def run(kind: str, url: str, requests_path: str, concurrency: int) -> dict[str, Any]:
    """Run one loop to the end of the file; the figures it prints."""
    loop_fn = httpx_loop if kind == "httpx" else aiohttp_loop
    if kind == "uvloop":
        import uvloop  # type: ignore[import-not-found,unused-ignore]  # optional: only this peer needs it

        uvloop.install()
    with open(requests_path, "rb") as file:
        items = requests_from(file)
        started = time.perf_counter()
        statuses = asyncio.run(loop_fn(url, items, concurrency))
        elapsed = time.perf_counter() - started
    count = sum(statuses.values())
    return {
        "items": count,
        "ok": statuses.get("201", 0),
        "statuses": statuses,
        "elapsed_s": round(elapsed, 4),
        "items_per_s": round(count / elapsed, 1) if elapsed > 0 else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a bare upload loop (benchmark baseline)")
    parser.add_argument("kind", choices=["aiohttp", "uvloop", "httpx"])
    parser.add_argument("--url", required=True, help="the full upload URL")
    parser.add_argument("--requests", required=True, help="file of <key>\\t<body> lines")
    parser.add_argument("--concurrency", type=int, required=True)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.kind, args.url, args.requests, args.concurrency)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
