"""The final record of an item that was sent: ``succeeded`` with its asset, or ``failed`` with the error the
retry policy gave up on (its message says why it gave up), each logged (``upload.succeeded`` at debug level,
``upload.failed``)."""

from __future__ import annotations

from typing import Any

import structlog

from ingest.admission.admit import WorkItem
from ingest.results.record import Result, Status, error_dict
from ingest.results.rules import StampClock
from ingest.upload.client import AttemptResult
from ingest.upload.retry import Outcome


class SentRecords:
    """Builds the records of one run's sent items (``run_id`` stamped on each)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._stamp = StampClock()  # each record's finished_at, when it is built (and rendered)
        # Bound once: the lazy module logger re-binds on every call, ~4 us each on a per-item path.
        self._log = structlog.get_logger("ingest.upload").bind()

    def __repr__(self) -> str:
        return f"SentRecords(run_id={self.run_id!r})"

    def succeeded(
        self, item: WorkItem, answer: AttemptResult, attempt: int, elapsed: float, rehost: dict[str, Any] | None
    ) -> Result:
        self._log.debug(
            "upload.succeeded",
            manifest=item.manifest,
            line=item.line,
            key=item.key,
            attempt=attempt,
            elapsed_ms=int(elapsed * 1000),
        )
        return self._record(item, Status.SUCCEEDED, answer, attempt, elapsed, asset=answer.asset, rehost=rehost)

    def failed(
        self,
        item: WorkItem,
        answer: AttemptResult,
        outcome: Outcome,
        attempt: int,
        elapsed: float,
        reason: str,
        rehost: dict[str, Any] | None = None,
    ) -> Result:
        info = answer.error
        retryable = outcome is not Outcome.PERMANENT
        message = info.message if info else f"HTTP {answer.status}"
        if reason in ("attempts_exhausted", "retry_time_exhausted", "conflict_window_exhausted"):
            message = f"{message} (gave up: {reason.replace('_', ' ')} after {attempt} attempts)"
        self._log.warning(
            "upload.failed",
            manifest=item.manifest,
            line=item.line,
            key=item.key,
            status=answer.status,
            error=info.type if info else None,
            message=message,
            attempts=attempt,
            retryable=retryable,
        )
        error = error_dict(
            info.type if info else "http_error",
            message,
            retryable=retryable,
            request_id=info.request_id if info else None,
        )
        return self._record(item, Status.FAILED, answer, attempt, elapsed, error=error, rehost=rehost)

    def _record(
        self,
        item: WorkItem,
        status: Status,
        answer: AttemptResult,
        attempt: int,
        elapsed: float,
        *,
        asset: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        rehost: dict[str, Any] | None = None,
    ) -> Result:
        """The final record of an item that was sent (``item`` is the row's body: a rehosted item's source url),
        rendered (``Result.render``)."""
        result = item.record(
            status,
            run_id=self.run_id,
            attempts=attempt,
            http_status=answer.status,
            asset=asset,
            error=error,
            elapsed_ms=int(elapsed * 1000),
            rehost=rehost,
            row_fp=item.row_fp if status is Status.SUCCEEDED else 0,
        )
        result.render(self._stamp())
        return result
