"""What the results file says before the run starts: what earlier runs settled (the resume index, its torn tail
repaired), and whether the file belongs to this run's manifests and key settings at all.

``check_belonging`` warns (``results.foreign``) when the file was made for other manifests or other key settings
— its items would be mixed into this run's report, or, with other key settings, everything would be sent again —
and refuses under ``strict`` (exit 2, nothing sent). For a fresh results file it looks for an earlier run's results
file of the same manifests beside them (``results.elsewhere``): a renamed manifest gets a new default results file
and would resend everything, exactly once only while the server still remembers the keys.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from ingest.admission.keys import KeyDeriver
from ingest.errors import UsageError
from ingest.manifest.options import ManifestOptions
from ingest.manifest.source import ManifestSource, read_manifest
from ingest.results import livefold
from ingest.results.index import ResumeIndex, fold_tail, repair
from ingest.results.livefold import LiveFold
from ingest.results.naming import family
from ingest.results.provenance import elsewhere, foreign
from ingest.results.snapshot import MIN_FOLDED, open_index, save_index

if TYPE_CHECKING:
    from ingest.run.pipeline import RunConfig

log = structlog.get_logger("ingest.run")

SAMPLE_ROWS = 20  # first rows of a manifest whose keys are looked up in the results file
TAIL_FOLDED_AT_END = 8  # at its end, a run folds its own records into the snapshot if they are at most 1/8 of it
TAIL_FOLDED_ALWAYS = 1 << 20  # ... or at most this many bytes (without a live fold: ``ingest.results.livefold``)


def load_resume(path: Path) -> ResumeIndex:
    """The resume index of ``path`` and its shard family (from its snapshot, ``ingest.results.snapshot``, when valid;
    saved again if many records had to be folded); a torn last line is truncated (and logged)."""
    index = open_index(path)
    if index.torn_tail:
        repair(path, index)
        log.warning("resume.repaired", results=str(path), truncated_at=index.repair_offset)
    if index.lines_read - index.snapshot_lines >= MIN_FOLDED:
        save_index(path, index)
    if index.unreadable_count:
        log.warning(
            "resume.unreadable_lines", results=str(path), count=index.unreadable_count, lines=index.unreadable_lines
        )
    if index.lines_read:
        log.info("resume.loaded", results=str(path), records=index.lines_read, keys=len(index))
    return index


def live_fold(path: Path, index: ResumeIndex, *, total: int | None) -> LiveFold | None:
    """A ``LiveFold`` of the records this run will write after what ``index`` covers, unless the manifest has more
    unsettled rows than ``livefold.MAX_ROWS`` (its tables would weigh on the run's memory: the next run folds the
    records from the file instead)."""
    expected = 0 if total is None else max(0, total - len(index))
    if expected > livefold.MAX_ROWS:
        return None
    return LiveFold(path, start=index.covered, expected=expected)


def save_resume(path: Path, index: ResumeIndex, fold: LiveFold | None = None) -> None:
    """At the end of a run: fold the records it appended into ``index`` and save it as the snapshot. ``fold`` holds
    them when it could follow the whole run (``ingest.results.livefold``): the file is not read back. Otherwise they
    are read back from the file, unless they are many (folding them would grow the tables; the next run folds them,
    and saves, instead). Not saved when all the snapshot lacks is run records: a rerun that sent nothing appends its
    two, and rewriting the whole snapshot for them (25 MB at 1M done rows) cost more than the next run folding two
    lines past the old one. Item records, finished manifest blocks the snapshot does not hold, or ``MIN_FOLDED``
    lines of run records, and it is saved."""
    if fold is None or not fold.adopt(index):
        try:
            appended = path.stat().st_size - index.covered
        except OSError:
            return
        if appended > max(TAIL_FOLDED_ALWAYS, index.covered // TAIL_FOLDED_AT_END):
            return
    fold_tail(index, path)  # what ``fold`` holds leaves nothing to read
    lacked = index.lines_read - index.snapshot_lines
    blocks_found = len(index.blocks) != index.snapshot_blocks
    if (index.unsaved_items() > 0 or lacked >= MIN_FOLDED or blocks_found) and not index.torn_tail:
        save_index(path, index)


def check_belonging(config: RunConfig, index: ResumeIndex) -> None:
    """Warn (``config.strict``: refuse) when the results file was made for other manifests or key settings, or
    (fresh) when an earlier one is beside the manifests; see the module docstring."""
    path, sources, keys, strict = config.results_path, config.sources, config.keys, config.strict
    options = config.manifest_options
    manifests = [source.path for source in sources]
    settings = {"key_fields": list(keys.key_fields), "key_namespace": keys.key_namespace}
    by_path = {source.path: source for source in sources}

    def known(manifest: str) -> bool:
        return _knows_some(index, by_path[manifest], keys, options)

    ca_bundle = config.client.ca_bundle
    started = index.history.started
    problems = foreign(index.history, manifests, settings, known=known, ca_bundle=ca_bundle) if started else []
    for problem in problems:
        log.warning("results.foreign", results=str(path), problem=problem, strict=strict)
    if problems and strict:
        raise UsageError(f"{path}: {problems[0]} (--strict refuses; give the right --results)")
    if index.lines_read == 0 and len(family(path)) <= 1:
        other = elsewhere(path, manifests, ca_bundle=ca_bundle)
        if other is not None:
            log.warning(
                "results.elsewhere",
                results=str(path),
                earlier=str(other),
                hint=f"an earlier run of this manifest recorded its items in {other}; to resume it, give "
                f"--results {other}",
            )


def _knows_some(index: ResumeIndex, source: ManifestSource, keys: KeyDeriver, options: ManifestOptions) -> bool:
    """Whether any of the first ``SAMPLE_ROWS`` valid rows of ``source`` has a key the index knows."""
    if source.is_stdin:
        return False

    def quiet(_event: str, **_fields: Any) -> None:
        """Manifest warnings are the producer's to give, once."""

    # The generator is dropped after the sample, which closes the file (CPython frees it at once).
    for row in itertools.islice(read_manifest(source, options, warn=quiet), SAMPLE_ROWS):
        if row.request is not None and keys.derive(row.request.body(), row.idempotency_key) in index:
            return True
    return False
