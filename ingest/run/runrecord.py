"""The run's own records in the results file (``ingest.results.runlog``): what it read, how it ended, and why.

``RunRecorder`` makes the ``run_started`` line (the manifests with their fingerprints, the key settings) that the
sink writes first, and the ``run_ended`` line (outcome, reason, exit code, counts) that it writes last — in its
``finally``, so a run that is cancelled or aborted still says so; only SIGKILL leaves a start without an end.

Outcomes: ``completed`` (every item was tried: exit 0 or 1), ``interrupted`` (a signal, or ``--max-duration``:
items left pending, the same command continues), ``aborted`` (credentials rejected, TLS, the failure threshold,
or the service unavailable for longer than ``max_outage``: exit 3 or 4, items left pending).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from ingest.results.rules import utc_now
from ingest.results.runlog import RUN_ENDED, RUN_STARTED, manifest_identity, run_record_line
from ingest.version import __version__

if TYPE_CHECKING:
    from ingest.run.pipeline import RunReport

log = structlog.get_logger("ingest.run")


@dataclass(frozen=True, slots=True)
class Ending:
    """How a run ended, as the run record and the summary say it."""

    outcome: str  # "completed", "interrupted" or "aborted"
    reason: str | None  # why, when it did not complete
    exit_code: int


class RunRecorder:
    """The two run records of one run; see the module docstring."""

    def __init__(
        self,
        *,
        run_id: str,
        manifests: Sequence[str],
        key_fields: Sequence[str],
        key_namespace: str | None,
        ca_bundle: str | None = None,
    ) -> None:
        self.run_id = run_id
        self.manifests = list(manifests)  # paths as given ("-" for stdin)
        self.ca_bundle = ca_bundle  # the CAs an https manifest's server is trusted by, to fingerprint it
        self.key_settings = {"key_fields": list(key_fields), "key_namespace": key_namespace}
        self.started_at = utc_now()  # ISO-8601 UTC, as in the results file
        self.started_epoch = time.time()
        self._started_mono = time.monotonic()
        self.ended_at: str | None = None  # set when the end record is made
        self.duration_s: float | None = None

    def __repr__(self) -> str:
        return f"RunRecorder(run_id={self.run_id!r}, started_at={self.started_at!r}, ended_at={self.ended_at!r})"

    def started_line(self) -> bytes:
        """The ``run_started`` record."""
        return run_record_line(
            RUN_STARTED,
            run_id=self.run_id,
            started_at=self.started_at,
            version=__version__,
            manifests=[manifest_identity(path, ca_bundle=self.ca_bundle) for path in self.manifests],
            **self.key_settings,
        )

    def ended_line(self, ending: Ending, counts: dict[str, Any]) -> bytes:
        """The ``run_ended`` record (stamps the end)."""
        self.ended_at = utc_now()
        self.duration_s = round(time.monotonic() - self._started_mono, 3)
        return run_record_line(
            RUN_ENDED,
            run_id=self.run_id,
            started_at=self.started_at,
            ended_at=self.ended_at,
            duration_s=self.duration_s,
            outcome=ending.outcome,
            reason=ending.reason,
            exit_code=ending.exit_code,
            counts=counts,
        )

    def epilogue(self, ending: Callable[[], tuple[Ending, dict[str, Any]]]) -> Callable[[], bytes]:
        """The sink's last line, made when the sink closes (``ending`` gives the outcome and counts then)."""

        def line() -> bytes:
            return self.ended_line(*ending())

        return line


def ending_of(*, aborted: object | None, interrupted: bool, stop_reason: str | None, exit_code: int) -> Ending:
    """The outcome from how the run's control stopped (if it did)."""
    if aborted is not None:
        return Ending("aborted", str(aborted), exit_code)
    if interrupted or stop_reason is not None:
        return Ending("interrupted", stop_reason or "signal", exit_code)
    return Ending("completed", None, exit_code)


def summary_document(report: RunReport, figures: dict[str, Any]) -> dict[str, Any]:
    """The run's final summary: the ``run.summary`` event's fields, and ``--summary-json``'s document."""
    stats, ending = report.stats, report.ending
    total = figures.get("total")
    return {
        "outcome": ending.outcome,
        "reason": ending.reason,
        "exit_code": ending.exit_code,
        "started_at": report.started_at,
        "ended_at": report.ended_at,
        "duration_s": report.duration_s,
        **figures,
        "pending": max(0, total - stats.done) if isinstance(total, int) else None,
        "errors_by_type": dict(stats.errors_by_type),
        "http_statuses": dict(stats.by_http_status),
        "results": str(report.results_path),
    }


def log_summary(report: RunReport, figures: dict[str, Any]) -> dict[str, Any]:
    """The ``run.summary`` event (and ``run.interrupted`` with what stays pending); returns its fields."""
    stats = report.stats
    summary = summary_document(report, figures)
    if report.aborted is not None:
        summary["aborted"] = str(report.aborted)
    if report.interrupted:
        settled = stats.by_status.get("succeeded", 0) + stats.by_status.get("failed", 0)
        log.warning("run.interrupted", pending=max(0, stats.queued - settled))
    log.info("run.summary", **summary)
    return summary
