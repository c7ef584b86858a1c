"""Shared fixtures: the anyio backend, a running fake Assets API, and helpers to read results files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from ingest.fakeserver import FakeServer, FakeServerConfig, running_fake_server


@pytest.fixture
def anyio_backend() -> str:
    """Every async test runs on asyncio (aiohttp needs it)."""
    return "asyncio"


@pytest.fixture
async def fake_server() -> AsyncIterator[FakeServer]:
    """A fault-free fake Assets API on a free loopback port."""
    async with running_fake_server(FakeServerConfig()) as server:
        yield server


def read_results(path: Path) -> list[dict[str, Any]]:
    """Every record of a results file."""
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
