"""``python -m ingest …`` in a subprocess, with a clean environment, bounded in time."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import orjson

from tests.helpers import KEY, ROOT


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any ``FAL_*`` / ``INGEST_*`` variable, plus ``extra``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("FAL_", "INGEST_"))}
    env.pop("PYTHONWARNINGS", None)
    env.update(extra)
    return env


@dataclass(frozen=True)
class CliResult:
    """A finished ``python -m ingest`` process."""

    returncode: int
    stdout: str
    stderr: str

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines of stderr."""
        found = []
        for line in self.stderr.splitlines():
            if line.startswith("{"):
                with contextlib.suppress(orjson.JSONDecodeError):
                    found.append(orjson.loads(line))
        return found

    def event(self, name: str) -> dict[str, Any]:
        """The first log event called ``name``."""
        for event in self.events():
            if event.get("event") == name:
                return event
        raise AssertionError(f"no {name!r} event in stderr:\n{self.stderr}")


async def run_cli(*args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> CliResult:
    """Run ``python -m ingest *args`` to completion (bounded) while the caller's event loop keeps serving."""
    with anyio.fail_after(90):
        done = await anyio.run_process(
            [sys.executable, "-m", "ingest", *args],
            env=dict(env if env is not None else clean_env(FAL_KEY=KEY)),
            cwd=cwd or ROOT,
            check=False,
        )
    return CliResult(done.returncode, done.stdout.decode(), done.stderr.decode())
