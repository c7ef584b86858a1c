"""``ingest validate``: read every row, decide it as a run would, send nothing, and say what a run would do.

It uses the same ``Admission`` as ``ingest run``, so the counts are the run's own: valid, invalid, duplicate —
and, given a results file, already done, to retry, and changed since ingested.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from ingest.admission.admit import Rules, WorkItem
from ingest.admission.keys import KeyDeriver, row_salt
from ingest.admission.seen import SeenKeys
from ingest.errors import EXIT_ITEMS_FAILED, EXIT_OK
from ingest.manifest.skip import LineSkip
from ingest.manifest.source import ManifestOptions, ManifestSource, count_rows, read_manifest
from ingest.results.index import ResumeIndex, Verdict
from ingest.results.record import Result, Status
from ingest.results.snapshot import open_index
from ingest.run.pipeline import RunConfig
from ingest.terminal import for_terminal


@dataclass(slots=True)
class Plan:
    """What a run would do with the manifests."""

    rows: int = 0
    counts: Counter[str] = field(default_factory=Counter)  # send, invalid, duplicate, skip_done, skip_failed
    problems: list[str] = field(default_factory=list)  # "file:line: field 'x': reason" (first `show` of them)
    warnings: list[str] = field(default_factory=list)  # manifest-level warnings (unknown columns …)
    detected: list[str] = field(default_factory=list)  # per manifest: format, encoding, delimiter, mapping

    def __repr__(self) -> str:
        return f"Plan(rows={self.rows}, counts={dict(self.counts)})"


def plan(
    sources: Sequence[ManifestSource],
    options: ManifestOptions,
    rules: Rules | KeyDeriver,
    *,
    index: ResumeIndex | None = None,
    show: int = 20,
) -> Plan:
    """Decide every row as ``ingest run`` would, without sending anything.

    Counts: ``send`` (= ``new`` + ``retry``), ``invalid`` (``changed`` among them), ``duplicate``, ``skip_done``,
    ``skip_failed``; another shard's rows are not counted.
    """
    result = Plan()
    index = index or ResumeIndex()
    rules = rules if isinstance(rules, Rules) else Rules(rules)
    admission = rules.admission(index)
    admission.seen = _seen_table(sources, known=len(index))

    def warn(event: str, **fields: Any) -> None:
        detail = ", ".join(f"{name}={value}" for name, value in fields.items())
        (result.detected if event == "manifest.detected" else result.warnings).append(f"{event}: {detail}")

    for source in sources:
        skip = None
        if rules.shard is None and index.rows is not None:  # finished rows are counted by their line, unread
            skip = LineSkip(
                row_salt(options, rules.keys, require_fal_host=rules.require_fal_host), index.has_row, index.blocks
            )
            admission.row_fps = skip.fps
        for row in read_manifest(source, options, warn=warn, skip=skip):
            decision = admission.admit(row)
            if decision is Verdict.OTHER_SHARD:
                continue
            result.rows += 1
            if isinstance(decision, WorkItem):
                result.counts["send"] += 1
                result.counts["retry" if decision.key in index else "new"] += 1
            elif isinstance(decision, Verdict):
                result.counts[decision.value] += 1
            else:
                _count_result(result, decision, show)
        if skip is not None:
            result.rows += skip.skipped
            result.counts["skip_done"] += skip.take_skipped()
    return result


def _seen_table(sources: Sequence[ManifestSource], *, known: int) -> SeenKeys:
    """The duplicate table, sized once from a line count less the rows an earlier run settled (growing it would
    hold the old and the new arrays at once: 2.5 times the table at the peak)."""
    counts = [count_rows(source) for source in sources]
    return SeenKeys(expected=0 if None in counts else max(0, sum(c or 0 for c in counts) - known))


def _count_result(result: Plan, record: Result, show: int) -> None:
    if record.status is Status.DUPLICATE:
        result.counts["duplicate"] += 1
        return
    result.counts["invalid"] += 1
    if record.error is not None and record.error.get("type") == "changed_since_ingested":
        result.counts["changed"] += 1
    if len(result.problems) < show and record.error is not None:
        field_name = record.error.get("field")
        where = f"field '{field_name}': " if field_name else ""
        result.problems.append(f"{record.manifest}:{record.line}: {where}{record.error['message']}")


def validate_manifests(
    sources: Sequence[ManifestSource],
    options: ManifestOptions,
    rules: Rules | KeyDeriver,
    *,
    show: int = 20,
    out: TextIO | None = None,
) -> int:
    """Print what was detected per manifest, counts and the first problems; exit 0 when every row is valid, else 1."""
    out = out or sys.stdout
    result = plan(sources, options, rules, show=show)
    counts = result.counts
    print(
        f"{result.rows} rows: {counts['send']} valid, {counts['invalid']} invalid, {counts['duplicate']} duplicate",
        file=out,
    )
    for detected in result.detected:
        print(f"detected: {detected.removeprefix('manifest.detected: ')}", file=out)
    for warning in result.warnings:
        print(for_terminal(f"warning: {warning}"), file=out)
    if result.problems:
        shown = len(result.problems)
        print(
            f"first {shown} problem{'s' if shown != 1 else ''}:" if counts["invalid"] > shown else "problems:", file=out
        )
        for problem in result.problems:
            print(for_terminal(f"  {problem}"), file=out)
    return EXIT_ITEMS_FAILED if counts["invalid"] else EXIT_OK


def dry_run(config: RunConfig, *, estimate_rate: float, out: Any = None) -> int:
    """``ingest run --dry-run``: what the run would do, and how long it would take at the configured rate."""
    out = out or sys.stdout
    index = open_index(config.results_path)
    result = plan(config.sources, config.manifest_options, config.rules, index=index)
    c = result.counts
    send = c["send"] if config.limit is None else min(c["send"], config.limit)
    seconds = send / config.rate
    print(f"dry run over {result.rows} rows (results: {config.results_path}, {len(index)} keys known):", file=out)
    print(
        f"  new: {c['new']}  will retry: {c['retry']}  already done: {c['skip_done']}  "
        f"failed earlier (not retried without --retry-failed): {c['skip_failed']}",
        file=out,
    )
    print(f"  duplicate: {c['duplicate']}  invalid: {c['invalid']}  changed since ingested: {c['changed']}", file=out)
    print(
        f"  would send {send} items; at {config.rate:g} requests/s that takes at least {_duration(seconds)}"
        f"{f' (shard {config.shard}, the job rate {estimate_rate:g}/s divided)' if config.shard else ''}",
        file=out,
    )
    for problem in result.problems:
        print(for_terminal(f"  {problem}"), file=out)
    return EXIT_ITEMS_FAILED if c["invalid"] else 0


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
