"""The naive client ``ingest run`` is measured against under faults: what a careful person writes in an afternoon.

``python bench/naive.py --url URL --requests FILE --concurrency C --rate R`` sends every line of ``FILE``
(``<idempotency key>\\t<JSON body>``, the bytes ``ingest`` sends) from ``C`` tasks on one aiohttp session, paced
at ``R`` requests/s by one shared clock (every attempt included, like ``ingest``'s ``--rate``), and retries each
item on its own until it gets a 201:

- 429: waits out that response's ``Retry-After`` (seconds; 1 s if absent), this item only;
- 5xx, 409, a timeout or a broken connection: exponential backoff of this item (0.5 s doubling, at most 30 s, "equal
  jitter"), at most 12 attempts;
- any other status: the item failed.

No results file, no limiter beyond the pacing, no shared reaction to 429s. It prints one JSON line:
``{"items": n, "ok": n_201, "attempts": n, "elapsed_s": s, "items_per_s": r, "statuses": {...}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections.abc import Iterator

HEADERS = {
    "Authorization": "Key bench-key",
    "User-Agent": "bench-naive",
    "Content-Type": "application/json",
    "Accept": "application/json",
}
TIMEOUT_S = 60.0  # per request, as ingest's default request_timeout
MAX_ATTEMPTS = 12
BACKOFF_INITIAL_S, BACKOFF_MAX_S = 0.5, 30.0


def requests_from(path: str) -> Iterator[tuple[str, bytes]]:
    with open(path, "rb") as file:
        for line in file:
            key, _, body = line.rstrip(b"\n").partition(b"\t")
            yield key.decode(), body


class Pacer:
    """One request every ``1 / rate`` seconds, shared by every task (a start-time schedule, no bursts)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next_at = time.monotonic()

    async def wait(self) -> None:
        now = time.monotonic()
        at = max(self.next_at, now)
        self.next_at = at + self.interval
        if at > now:
            await asyncio.sleep(at - now)


def backoff(attempt: int, rng: random.Random) -> float:
    window = min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2.0 ** (attempt - 1))
    return window / 2 + rng.uniform(0, window / 2)


def retry_after(value: str | None) -> float:
    if value is None:
        return 1.0
    try:
        seconds = float(value)
    except ValueError:
        return 1.0
    return max(0.0, seconds)


async def run(url: str, path: str, concurrency: int, rate: float) -> dict[str, object]:
    import aiohttp

    statuses: dict[str, int] = {}
    counts = {"items": 0, "ok": 0, "attempts": 0}
    items = requests_from(path)
    pacer, rng = Pacer(rate), random.Random(7)
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(key: str, body: bytes) -> bool:
            headers = {**HEADERS, "Idempotency-Key": key}
            for attempt in range(1, MAX_ATTEMPTS + 1):
                await pacer.wait()
                counts["attempts"] += 1
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                        status, hint = resp.status, resp.headers.get("Retry-After")
                except (aiohttp.ClientError, TimeoutError):
                    status, hint = 0, None
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if status == 201:
                    return True
                if status == 429:
                    await asyncio.sleep(retry_after(hint))
                elif status == 0 or status == 409 or status >= 500:
                    await asyncio.sleep(backoff(attempt, rng))
                else:
                    return False
            return False

        async def worker() -> None:
            for key, body in items:
                ok = await one(key, body)
                counts["items"] += 1
                counts["ok"] += ok

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {**counts, "statuses": statuses}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the naive retrying client (benchmark baseline under faults)")
    parser.add_argument("--url", required=True, help="the full upload URL")
    parser.add_argument("--requests", required=True, help="file of <key>\\t<body> lines")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    figures = asyncio.run(run(args.url, args.requests, args.concurrency, args.rate))
    elapsed = time.perf_counter() - started
    items = int(str(figures["items"]))
    figures.update(elapsed_s=round(elapsed, 3), items_per_s=round(items / elapsed, 2) if elapsed else 0.0)
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
