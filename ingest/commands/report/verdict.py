"""The night's verdict, first thing in ``ingest report``: how the last run ended and what is left.

From the run records (``ingest.results.runlog``) of each results file: the last run's outcome (completed,
interrupted, aborted — or "did not finish" when it has no end record: killed, or still running), why, its exit
code, start and duration; and, from the item view, the manifest rows total (the last run's pre-count, summed over
the files: shards), done, failed, invalid and still pending. "Still pending" is what the last run left: its rows
minus those it accounted for (finished, or skipped as settled earlier); done, failed and invalid are the items'
state now, across the files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ingest.results.scan import FileTally

__all__ = ["FileVerdict", "Verdict", "build_verdict", "describe"]

UNFINISHED = "did not finish"


@dataclass(slots=True)
class FileVerdict:
    """The last run recorded in one results file."""

    path: str
    run_id: str
    outcome: str  # completed / interrupted / aborted / "did not finish"
    reason: str | None
    exit_code: int | None  # None without an end record
    started_at: str | None
    ended_at: str | None
    duration_s: float | None
    total: int | None  # manifest rows the run counted (None: unknown, e.g. stdin or no end record)
    accounted: int | None  # rows it finished or skipped as settled earlier


@dataclass(slots=True)
class Verdict:
    """The latest run across the files, the rows left, and each file's last run (several: shards)."""

    last: FileVerdict
    rows_total: int | None
    done: int
    failed: int
    invalid: int
    duplicate: int
    pending: int | None
    files: list[FileVerdict] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The verdict for ``ingest report --json``."""
        last = self.last
        return {
            "outcome": last.outcome,
            "reason": last.reason,
            "exit_code": last.exit_code,
            "run_id": last.run_id,
            "started_at": last.started_at,
            "ended_at": last.ended_at,
            "duration_s": last.duration_s,
            "rows_total": self.rows_total,
            "done": self.done,
            "failed": self.failed,
            "invalid": self.invalid,
            "duplicate": self.duplicate,
            "pending": self.pending,
            "files": [
                {"path": f.path, "run_id": f.run_id, "outcome": f.outcome, "exit_code": f.exit_code} for f in self.files
            ],
        }


def build_verdict(files: list[FileTally], items: dict[str, int]) -> Verdict | None:
    """The verdict, or ``None`` when no file holds a run record (written before run records existed)."""
    verdicts = [v for tally in files if (v := _file_verdict(tally)) is not None]
    if not verdicts:
        return None
    last = max(verdicts, key=lambda v: v.started_at or "")
    known = all(v.total is not None and v.accounted is not None for v in verdicts)
    rows_total = sum(v.total or 0 for v in verdicts) if known else None
    accounted = sum(v.accounted or 0 for v in verdicts)
    return Verdict(
        last=last,
        rows_total=rows_total,
        done=items.get("succeeded", 0),
        failed=items.get("failed", 0),
        invalid=items.get("invalid", 0),
        duplicate=items.get("duplicate", 0),
        pending=max(0, rows_total - accounted) if rows_total is not None else None,
        files=verdicts,
    )


def _file_verdict(tally: FileTally) -> FileVerdict | None:
    last = tally.runs.last
    if last is None:
        return None
    started, ended = last
    run_id, started_at = str(started.get("run_id") or "?"), _str(started.get("started_at"))
    if ended is None:
        reason = "no end record: the process was killed, or is still running"
        return FileVerdict(tally.path, run_id, UNFINISHED, reason, None, started_at, None, None, None, None)
    raw_counts = ended.get("counts")
    counts: dict[str, Any] = raw_counts if isinstance(raw_counts, dict) else {}
    total, exit_code, duration = counts.get("total"), ended.get("exit_code"), ended.get("duration_s")
    done = counts.get("done")
    return FileVerdict(
        tally.path,
        run_id,
        str(ended.get("outcome") or "?"),
        _str(ended.get("reason")),
        exit_code if isinstance(exit_code, int) else None,
        started_at,
        _str(ended.get("ended_at")),
        float(duration) if isinstance(duration, int | float) else None,
        total if isinstance(total, int) else None,
        done if isinstance(done, int) else None,
    )


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def describe(verdict: Verdict) -> list[str]:
    """The verdict as the text report's opening lines."""
    last = verdict.last
    head = f"Last run: {last.outcome}"
    if last.reason:
        head += f" ({last.reason})"
    if last.exit_code is not None:
        head += f", exit {last.exit_code}"
    when = f"started {last.started_at or '?'}"
    if last.duration_s is not None:
        when += f", took {_duration(last.duration_s)}"
    lines = [head, f"  {when} (run {last.run_id})"]
    rows = f"{verdict.rows_total:,} manifest rows" if verdict.rows_total is not None else "manifest rows: unknown"
    pending = f"{verdict.pending:,}" if verdict.pending is not None else "?"
    lines.append(
        f"  {rows}: {verdict.done:,} done, {verdict.failed:,} failed, {verdict.invalid:,} invalid"
        + (f", {verdict.duplicate:,} duplicate" if verdict.duplicate else "")
        + f", {pending} still pending"
    )
    if last.outcome != "completed" or verdict.pending:
        lines.append(
            "  run the same command to continue"
            if last.outcome != "aborted"
            else "  fix the cause, then run the same command"
        )
    if len(verdict.files) > 1:
        lines += [
            f"  {f.path}: {f.outcome}, exit {f.exit_code if f.exit_code is not None else '?'}" for f in verdict.files
        ]
    return lines


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"
