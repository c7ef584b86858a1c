"""What ``ingest run`` prints for a person (on stderr; the JSON ``run.summary`` event carries the same figures)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
import structlog

from ingest.errors import UsageError
from ingest.logs import redact
from ingest.run.pipeline import RunReport
from ingest.terminal import for_terminal


def print_summary(report: RunReport, *, out: Any = None, as_event: bool = False) -> None:
    """A short human summary on stderr (the JSON ``run.summary`` event carries the same figures); with JSON logs
    (``as_event``) it is a ``run.summary_text`` event instead, so that stderr stays one JSON object per line."""
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
    if as_event:
        structlog.get_logger("ingest.run").info("run.summary_text", text=lines)
        return
    print(for_terminal(redact("\n".join(lines))), file=out)


def write_summary_json(summary: dict[str, Any], target: str) -> None:
    """``--summary-json``: the final summary as one JSON document, to a file (replaced whole) or ``-`` (stdout)."""
    document = orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE, default=str)
    if target == "-":
        sys.stdout.buffer.write(document)
        sys.stdout.flush()
        return
    path = Path(target)
    temp = path.with_name(f".{path.name}.tmp")
    try:
        temp.write_bytes(document)
        temp.replace(path)
    except OSError as exc:
        raise UsageError(f"--summary-json {target}: cannot be written ({exc.strerror or exc})") from exc
