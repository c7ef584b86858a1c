"""What ``ingest run`` prints for a person (on stderr; the JSON ``run.summary`` event carries the same figures)."""

from __future__ import annotations

import sys
from typing import Any

from ingest.logs import redact
from ingest.run.pipeline import RunReport
from ingest.terminal import for_terminal


def print_summary(report: RunReport, *, out: Any = None) -> None:
    """A short human summary on stderr (the JSON ``run.summary`` event carries the same figures)."""
    out = out or sys.stderr
    s = report.stats.snapshot()
    stats = report.stats
    skipped = f"{stats.skipped_done} already done"
    if stats.skipped_failed:
        skipped += f", {stats.skipped_failed} failed earlier and not retried (--retry-failed retries them)"
    lines = [
        f"ingest: {s['succeeded']} succeeded, {s['failed']} failed, {s['invalid']} invalid, "
        f"{s['duplicate']} duplicate, skipped: {skipped} — "
        f"{s['requests']} requests ({s['retries']} retries) in {s['elapsed_s']:.1f}s",
        f"results: {report.results_path}",
    ]
    if report.aborted is not None:
        lines.append(f"aborted: {report.aborted} — unfinished items stay pending for the next run")
    elif report.interrupted:
        lines.append("interrupted: the results file is complete up to here; run the same command to continue")
    print(for_terminal(redact("\n".join(lines))), file=out)
