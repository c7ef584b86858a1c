"""Shared fixtures: the anyio backend, a running fake Assets API, and a test's subprocesses (helpers live in
``tests.helpers``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ingest.fakeserver import FakeServer, FakeServerConfig, running_fake_server
from tests.helpers.processes import Processes


@pytest.fixture
def anyio_backend() -> str:
    """Every async test runs on asyncio (aiohttp needs it)."""
    return "asyncio"


@pytest.fixture
async def fake_server() -> AsyncIterator[FakeServer]:
    """A fault-free fake Assets API on a free loopback port."""
    async with running_fake_server(FakeServerConfig()) as server:
        yield server


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """The test's fake-server and worker subprocesses, logs in ``tmp_path``; every worker killed when it ends."""
    spawned = Processes(tmp_path)
    yield spawned
    spawned.close()
