"""The run's rehost stage, built from its config: the journal beside the results file, the rehoster, the step."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from ingest.credentials import ApiKey
from ingest.manifest.source import ManifestSource
from ingest.rehost import Rehoster, RehostJournal, StorageRetry, create_rehoster, journal_path
from ingest.upload.rehosting import RehostStep

if TYPE_CHECKING:
    from ingest.run.pipeline import RunConfig


@contextlib.asynccontextmanager
async def rehost_stage(
    config: RunConfig, session: aiohttp.ClientSession, api_key: ApiKey, *, run_id: str
) -> AsyncIterator[RehostStep | None]:
    """The rehost step (``None`` with ``--rehost never``), its journal open for the run."""
    if config.rehost_mode == "never":
        yield None
        return
    journal = RehostJournal(journal_path(config.results_path))
    journal.load()
    policy = config.policy
    retry = StorageRetry(
        max_attempts=policy.max_attempts,
        max_retry_time=policy.max_retry_time,
        backoff_initial=policy.backoff_initial,
        backoff_max=policy.backoff_max,
        max_server_wait=policy.max_server_wait,
    )
    rng = random.Random(config.seed)  # backoff jitter of storage requests
    rehoster = create_rehoster(session, api_key, config.rehost, journal=journal, policy=retry, rng=rng)
    dirs = {source.name: manifest_dir(source) for source in config.sources}
    try:
        yield RehostStep(rehoster, dirs, run_id=run_id)
    finally:
        journal.close()


def rehost_figures(rehoster: Rehoster | None) -> dict[str, Any]:
    """The progress figures of the rehost stage (none without one)."""
    if rehoster is None:
        return {}
    return {"bytes_uploaded": rehoster.bytes_uploaded, "rehosted": rehoster.uploads, "rehost_reused": rehoster.reused}


def manifest_dir(source: ManifestSource) -> Path:
    """Where a manifest's relative source paths start: its folder (stdin: the working directory)."""
    return Path.cwd() if source.is_stdin else Path(source.path).resolve().parent
