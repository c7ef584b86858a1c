"""What a run is given (``RunConfig``, resolved from settings by the CLI or built by tests) and what it reports
(``RunReport``: its counters, how it ended, the exit code)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.admission.admit import Rules
from ingest.admission.keys import KeyDeriver
from ingest.admission.shard import Shard
from ingest.errors import EXIT_INTERRUPTED, EXIT_ITEMS_FAILED, EXIT_OK, IngestError
from ingest.manifest.source import ManifestOptions, ManifestSource
from ingest.rehost.options import RehostConfig
from ingest.run.runrecord import Ending, ending_of
from ingest.run.stats import RunStats
from ingest.settings import default
from ingest.upload.options import ClientOptions
from ingest.upload.retry import RetryPolicy


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Everything one run needs, resolved from settings by the CLI (or built directly by tests)."""

    sources: list[ManifestSource]
    results_path: Path
    client: ClientOptions
    rate: float
    burst: float | None = None
    manifest_options: ManifestOptions = field(default_factory=ManifestOptions)
    keys: KeyDeriver = field(default_factory=KeyDeriver)
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    retry_failed: bool = default("retry_failed")
    grace_period: float = default("grace_period")
    fsync_interval: float = default("fsync_interval")
    max_failures: int | None = None
    failure_ratio: float = default("failure_ratio")
    failure_min_items: int = default("failure_min_items")
    require_fal_host: bool = default("require_fal_host")
    progress_interval: float = default("progress_interval")
    handle_signals: bool = False
    limit: int | None = None  # stop queuing after this many items (trying a run on a slice)
    seed: int | None = None  # for the backoff jitter; None: from the OS
    shard: Shard | None = None  # this process's part of the key space (--shard K/N)
    max_duration: float | None = None  # stop taking new items after this many seconds, then drain
    max_outage: float = default("max_outage")  # seconds to wait for a vanished or unreachable service
    strict: bool = default("strict")  # refuse a results file made for other manifests or key settings
    preflight: bool = False  # probe the endpoint before the first item (the CLI's default is on: settings)
    progress: str = "log"  # "bar" (a live display on a terminal), "log" (run.progress events) or "off"
    metrics_port: int | None = None  # serve Prometheus metrics on this port while running
    metrics_host: str = default("metrics_host")
    metrics_textfile: Path | None = None  # write metrics here (node-exporter textfile collector), atomically
    family_lock_held: bool = False  # a --processes parent holds the results family's lock for this child
    rehost_mode: str = "never"  # --rehost: "auto", "always" or "never"
    rehost: RehostConfig = field(default_factory=RehostConfig)  # how media is put into fal storage

    @property
    def rules(self) -> Rules:
        """The admission rules of this run: the dry run and ``ingest validate`` decide rows by the same."""
        return Rules(self.keys, self.retry_failed, self.require_fal_host, self.shard)


@dataclass(slots=True)
class RunReport:
    """How the run ended: its counters, and why it stopped if it stopped early."""

    stats: RunStats
    results_path: Path
    aborted: IngestError | None = None
    interrupted: bool = False
    stop_reason: str | None = None  # why it stopped early without an abort (a signal, --max-duration)
    started_at: str | None = None  # as in the run records (ISO-8601 UTC)
    ended_at: str | None = None
    duration_s: float | None = None
    summary: dict[str, Any] = field(default_factory=dict)  # the final summary (``run.summary``'s fields)

    @property
    def ending(self) -> Ending:
        """Outcome (completed / interrupted / aborted), why, and the exit code."""
        return ending_of(
            aborted=self.aborted, interrupted=self.interrupted, stop_reason=self.stop_reason, exit_code=self.exit_code
        )

    @property
    def exit_code(self) -> int:
        """The README's § Exit codes."""
        if self.aborted is not None:
            # 3 (credentials, TLS, failure threshold), 4 (service unusable), 5 (local I/O)
            return self.aborted.exit_code
        if self.interrupted:
            return EXIT_INTERRUPTED
        # Items that failed permanently in an earlier run and were skipped are still not in the library:
        # a nightly rerun of the same manifest keeps saying so (exit 1) until they are fixed or retried.
        stats = self.stats
        if stats.by_status.get("failed", 0) or stats.by_status.get("invalid", 0) or stats.skipped_failed:
            return EXIT_ITEMS_FAILED
        return EXIT_OK
