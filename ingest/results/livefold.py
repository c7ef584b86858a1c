"""The records a run writes, folded into a resume index of their own as the sink writes them, so that the run's
end saves the snapshot (``ingest.results.snapshot``) without reading back what it wrote.

Without it, a run that appended many records left them to the next run to fold (about 7 µs a record, 7 s at 1M,
plus the snapshot written then): the first rerun after a big run paid for the run. ``LiveFold`` folds each record
from the ``Result`` the sink has just written — the same fields ``ingest.results.index`` reads back from its line:
key, status, body fingerprint, retryable, ``row_fp`` — and the run records from their lines, into a separate
``ResumeIndex`` (the run's admission must keep seeing only what earlier runs settled: a row repeated later in the
manifest is this run's duplicate, not a done row). At the end ``adopt`` checks that the file is exactly what was
folded — it was at ``index.covered`` when the sink opened it, and has grown by exactly the bytes written — and
merges the live index into the run's (``ResumeIndex.absorb``: later records win, a success is never undone), with
the manifest blocks whose rows all succeeded (``ingest.manifest.skip``), so the first rerun skips them whole.

Anything doubtful and the live index is dropped (``resume.fold_dropped``): a write that failed, the file not where
it was expected, more than ``MAX_ROWS`` records (its tables would grow the run's memory; a run of a manifest with
more unsettled rows than that does not start one). The results file stays the source of truth: the next run then
folds the records from the file, as before.
"""

from __future__ import annotations

from array import array
from pathlib import Path

import structlog

from ingest.keytable import fingerprint
from ingest.results.index import ResumeIndex, fold_line
from ingest.results.record import Result, Status

log = structlog.get_logger("ingest.results")

MAX_ROWS = 2_000_000  # records at most (~25 bytes each in the live tables: 50 MB)


class LiveFold:
    """A resume index of the records written to ``path`` since ``start`` (its size when the run began)."""

    def __init__(self, path: Path, *, start: int, expected: int) -> None:
        self.path = path
        self.start = start  # where the sink must begin appending: the run's index covers the file up to here
        self.index: ResumeIndex | None = ResumeIndex(expected=expected)
        self.end = start  # the file's size once everything folded so far is written
        self.dropped: str | None = None  # why the live index was given up, if it was
        # Manifest blocks the run read whose every row had a line fingerprint (``ingest.manifest.skip``): digest,
        # those fingerprints, rows skipped in it as done. Finished at the end if all those rows succeeded.
        self.candidates: list[tuple[bytes, array[int], int]] = []

    def __repr__(self) -> str:
        return f"LiveFold(path={str(self.path)!r}, start={self.start}, end={self.end}, dropped={self.dropped!r})"

    def opened(self, position: int) -> None:
        """The sink opened the file for appending at ``position``."""
        if position != self.start:
            self.drop(f"the results file was {position} bytes at open, its index covers {self.start}")

    def lines(self, data: bytes) -> None:
        """Run records the sink wrote (its first and last lines)."""
        index = self.index
        if index is None:
            return
        for raw in data.splitlines(keepends=True):
            index.lines_read += 1
            index.own_lines += 1
            if not fold_line(index, raw):
                self.drop("a line the sink wrote is not a record")
                return
        self.end += len(data)

    def results(self, batch: list[Result], written: int) -> None:
        """Records the sink wrote, ``written`` bytes in all."""
        index = self.index
        if index is None:
            return
        if index.own_lines + len(batch) > MAX_ROWS:
            self.drop(f"more than {MAX_ROWS:,} records")
            return
        for result in batch:
            key, status = result.key, result.status
            if key is not None and (status is Status.SUCCEEDED or status is Status.FAILED):
                index.put_fp(fingerprint(key), status.value, result.body_sha256, result.retryable)
                if status is Status.SUCCEEDED and result.row_fp:
                    index.add_row(result.row_fp)
        index.lines_read += len(batch)
        index.own_lines += len(batch)
        self.end += written

    def block(self, digest: bytes, fps: list[int], skipped: int) -> None:
        """A manifest block was read whose rows all have line fingerprints (``LineSkip.record``)."""
        if self.index is not None:
            self.candidates.append((digest, array("Q", fps), skipped))

    def drop(self, reason: str) -> None:
        """Give the live index up (the next run folds the records from the file)."""
        if self.index is not None:
            self.index, self.dropped, self.candidates = None, reason, []
            log.info("resume.fold_dropped", results=str(self.path), reason=reason)

    def adopt(self, into: ResumeIndex) -> bool:
        """Merge the live index into ``into`` (which covers the file up to ``start``) if the file is exactly what was
        folded; then ``into`` covers all of it. False (and nothing changed) otherwise."""
        live = self.index
        if live is None:
            return False
        try:
            size = self.path.stat().st_size
        except OSError as exc:
            self.drop(f"cannot stat the results file: {exc}")
            return False
        if into.covered != self.start or into.torn_tail or size != self.end:
            self.drop(f"the results file is {size} bytes, {self.end} were folded")
            return False
        into.absorb(live)
        into.covered = self.end
        for digest, fps, skipped in self.candidates:
            if all(map(into.has_row, fps)):  # every row of the block is done: a rerun skips it whole
                into.blocks[digest] = len(fps) + skipped
        self.index, self.candidates = None, []
        return True
