"""The run's rehost stage, built from its config: the journal beside the results file, the rehoster, the step."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest.credentials import ApiKey
from ingest.manifest.remote import folder
from ingest.manifest.source import ManifestSource
from ingest.run.stats import RecentRate, RunStats

if TYPE_CHECKING:
    import aiohttp

    from ingest.rehost import Rehoster
    from ingest.run.config import RunConfig
    from ingest.upload.rehosting import RehostStep


@contextlib.asynccontextmanager
async def rehost_stage(
    config: RunConfig, session: aiohttp.ClientSession, api_key: ApiKey, *, run_id: str
) -> AsyncIterator[RehostStep | None]:
    """The rehost step (``None`` with ``--rehost never``), its journal open for the run."""
    if config.rehost_mode == "never":
        yield None
        return
    from ingest.rehost import RehostJournal, StorageRetry, create_rehoster, journal_path  # the HTTP side: on use
    from ingest.upload.rehosting import RehostStep

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


class RehostFigures:
    """The progress figures of the rehost stage (none without one, or before an item to rehost): bytes sent and
    their recent rate, and the bytes ahead with the ETA they give.

    The bytes ahead are those of the sources looked at and not yet acknowledged, plus, for the items not yet looked
    at (queued, or in rows not read yet), the mean size of a source looked at so far: an estimate until the manifest
    has been read and every source looked at (``bytes_left_exact``).
    """

    def __init__(self) -> None:
        self._rate = RecentRate()  # of bytes sent

    def __call__(self, rehoster: Rehoster | None, stats: RunStats) -> dict[str, Any]:
        if rehoster is None or (stats.to_rehost == 0 and rehoster.tally.sources == 0):
            return {}  # no rehost stage, or (``--rehost auto``) nothing in the manifest so far to rehost
        tally = rehoster.tally
        rate = self._rate(tally.bytes_sent)
        unseen = _items_not_looked_at(stats, tally.sources)
        mean = tally.mean_size()
        left = None if mean is None else round(tally.bytes_left + unseen * mean)
        return {
            "rehosted": rehoster.uploads,
            "rehost_reused": rehoster.reused,
            "bytes_sent": tally.bytes_sent,
            "bytes_per_s": round(rate),
            "bytes_left": left,
            "bytes_left_exact": unseen == 0,
            "eta_bytes_s": round(left / rate) if left is not None and rate > 0 else None,
        }


def _items_not_looked_at(stats: RunStats, looked_at: int) -> float:
    """Items still to reach the rehost stage: queued ones, and the expected share of the rows not read yet."""
    queued = max(0, stats.to_rehost - looked_at)
    if stats.total is None or stats.rows == 0:
        return queued
    return queued + max(0, stats.total - stats.rows) * stats.to_rehost / stats.rows


def manifest_dir(source: ManifestSource) -> Path | str:
    """Where a manifest's relative source paths start: its folder (stdin: the working directory; a remote
    manifest: the URL of its folder, ``s3://b/dir/``)."""
    if source.is_remote:
        return folder(source.path)
    return Path.cwd() if source.is_stdin else Path(source.path).resolve().parent
