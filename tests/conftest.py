"""Shared fixtures: the anyio backend and a running fake Assets API (helpers live in ``tests.helpers``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

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
