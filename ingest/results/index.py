"""What earlier runs already did, read back from the results file — the file, not the server, decides.

``load_index(path)`` streams the file once and keeps, per key, its state and a fingerprint of the body that was
sent. A torn last line (the process died mid-write) is ignored and reported so the writer can truncate it
(``repair_offset``); an unreadable line elsewhere is skipped and counted, never fatal.

How a rerun treats a key (``ResumeIndex.decide``):

| earlier state     | same body                         | body changed                                   |
| ----------------- | --------------------------------- | ---------------------------------------------- |
| succeeded         | skip                              | report ``changed_since_ingested`` (no upload)  |
| failed, permanent | skip (send with ``--retry-failed``)| send: the row was edited, probably fixed       |
| failed, retryable | send                              | send                                           |
"""

from __future__ import annotations

import contextlib
import enum
import os
import re
from pathlib import Path

import orjson

from ingest.keytable import KeyTable, fingerprint, fingerprint_bytes
from ingest.results.lines import CompleteLines
from ingest.results.naming import family
from ingest.results.rules import replaces
from ingest.results.runlog import RUN_RECORD_PREFIX, RunHistory

_SUCCEEDED, _FAILED_PERMANENT, _FAILED_RETRYABLE = 1, 2, 3
_STATE_MASK = 0b11
_BODY_MASK = (1 << 30) - 1


class Verdict(enum.Enum):
    """What a rerun does with an item whose key it has seen before."""

    SEND = "send"
    SKIP_DONE = "skip_done"
    SKIP_FAILED = "skip_failed"
    CHANGED = "changed"
    OTHER_SHARD = "other_shard"  # not this shard's item (``--shard``); another process handles it


def body_fingerprint(sha_hex: str | bytes | None) -> int:
    """30 bits of a body's SHA-256: enough to notice an edited row (a miss is 1 in 10^9)."""
    if not sha_hex:
        return 0
    try:
        return int(sha_hex[:8], 16) & _BODY_MASK
    except ValueError:
        return 0


class ResumeIndex:
    """Per key: its state and a fingerprint of the body that was sent, in a ``KeyTable`` (14–21 bytes a key)."""

    ROW_VALUES = "B"  # value code of the row table (the value is always 1: a set)

    def __init__(self, *, expected: int = 0) -> None:
        self.table = KeyTable(value_code="I", expected=expected)  # key fp -> body fp << 2 | state
        self.rows: KeyTable | None = None  # line fingerprints of succeeded rows (``row_fp``), made on the first one
        self._expected = expected  # what the row table is sized for
        self.lines_read = 0  # complete lines in the files
        self.unreadable_lines: list[int] = []  # line numbers of this run's file that were not records (first 20)
        self.unreadable_count = 0
        self.torn_tail = False  # this run's file ended in a line without newline, which was ignored
        self.repair_offset: int | None = None  # where to truncate the file to drop the torn tail
        self.history = RunHistory()  # the run records of this run's file (not of its shard family)
        self.own_lines = 0  # complete lines of this run's file folded in
        self.covered = 0  # bytes of this run's file folded in (up to the end of its last complete line)
        self.snapshot_lines = 0  # of ``lines_read``, those the snapshot on disk covers (``ingest.results.snapshot``)
        self.snapshot_blocks = 0  # finished manifest blocks the snapshot on disk holds
        self.snapshot_runs = 0  # run records the snapshot on disk holds
        self.blocks: dict[bytes, int] = {}  # finished manifest blocks: digest -> rows in it (``ingest.manifest.skip``)

    def __repr__(self) -> str:
        return (
            f"ResumeIndex(keys={len(self.table)}, lines_read={self.lines_read}, "
            f"unreadable={self.unreadable_count}, torn_tail={self.torn_tail}, bytes={self.table.nbytes})"
        )

    def __len__(self) -> int:
        return len(self.table)

    def mark_saved(self) -> None:
        """The snapshot on disk now holds everything folded in (its lines, blocks and run records)."""
        self.snapshot_lines, self.snapshot_blocks = self.lines_read, len(self.blocks)
        self.snapshot_runs = len(self.history)

    def unsaved_items(self) -> int:
        """Lines folded in since the snapshot on disk that are not run records (item records, unreadable lines)."""
        return self.lines_read - self.snapshot_lines - (len(self.history) - self.snapshot_runs)

    def add_row(self, row_fp: int) -> None:
        """Note the line fingerprint of a succeeded row (``ingest.manifest.skip``)."""
        if self.rows is None:
            self.rows = KeyTable(value_code=self.ROW_VALUES, expected=self._expected)
        self.rows.put(row_fp or 1, 1)

    def has_row(self, row_fp: int) -> bool:
        """Whether a row read from a line with this fingerprint succeeded earlier."""
        return self.rows is not None and self.rows.get(row_fp or 1) is not None

    def __contains__(self, key: str) -> bool:
        return self.table.get(fingerprint(key)) is not None

    def decide(self, key: str, body_sha256: str, *, retry_failed: bool) -> Verdict:
        """The verdict for ``key`` whose current body hashes to ``body_sha256``."""
        return self.decide_fp(fingerprint(key), body_sha256, retry_failed=retry_failed)

    def decide_fp(self, fp: int, body_sha256: str, *, retry_failed: bool) -> Verdict:
        """``decide`` for a key whose ``keytable.fingerprint`` the caller already has."""
        value = self.table.get(fp)
        if value is None:
            return Verdict.SEND
        state, same_body = value & _STATE_MASK, value >> 2 == body_fingerprint(body_sha256)
        if state == _SUCCEEDED:
            return Verdict.SKIP_DONE if same_body else Verdict.CHANGED
        if state == _FAILED_PERMANENT and same_body and not retry_failed:
            return Verdict.SKIP_FAILED
        return Verdict.SEND

    def put(self, key: str, status: str, body_sha256: str | None, retryable: bool) -> None:
        """Fold one record in (later records win, but a success is never undone)."""
        self.put_fp(fingerprint(key), status, body_sha256, retryable)

    def put_fp(self, fp: int, status: str, body_sha256: str | bytes | None, retryable: bool) -> None:
        """``put`` for a key whose fingerprint the caller already has."""
        if status not in ("succeeded", "failed"):
            return
        succeeded = status == "succeeded"
        previous = None if succeeded else self.table.get(fp)
        if previous is not None and not replaces(
            new_succeeded=succeeded, old_succeeded=previous & _STATE_MASK == _SUCCEEDED, new_is_later=True
        ):
            return
        state = _SUCCEEDED if succeeded else _FAILED_RETRYABLE if retryable else _FAILED_PERMANENT
        self.table.put(fp, body_fingerprint(body_sha256) << 2 | state)

    def absorb(self, later: ResumeIndex) -> None:
        """Fold in everything ``later`` holds, as if its lines came after this index's (``ingest.results.livefold``):
        its keys' states replace these unless they would undo a success; its rows, lines and run records are added."""
        if not self.table and self.rows is None:  # a fresh results file: the later tables are the whole index
            self.table, self.rows, later.table, later.rows = later.table, later.rows, self.table, None
        table = self.table
        for fp, value in zip(*later.table.arrays(), strict=True):
            if not fp:
                continue
            previous = table.put_new(fp, value)
            if previous is not None and replaces(
                new_succeeded=value & _STATE_MASK == _SUCCEEDED,
                old_succeeded=previous & _STATE_MASK == _SUCCEEDED,
                new_is_later=True,
            ):
                table.put(fp, value)
        if later.rows is not None:
            for fp in later.rows.arrays()[0]:
                if fp:
                    self.add_row(fp)
        self.lines_read += later.lines_read
        self.own_lines += later.own_lines
        self.unreadable_count += later.unreadable_count
        for record in [*later.history.started, *later.history.ended.values()]:
            self.history.add(record)

    def add(self, record: dict[str, object]) -> None:
        """Fold one parsed record in."""
        key, status, sha, error = (
            record.get("key"),
            record.get("status"),
            record.get("body_sha256"),
            record.get("error"),
        )
        if isinstance(key, str) and isinstance(status, str):
            retryable = isinstance(error, dict) and bool(error.get("retryable"))
            self.put(key, status, sha if isinstance(sha, str) else None, retryable)
            row_fp = record.get("row_fp")
            if status == "succeeded" and isinstance(row_fp, str) and len(row_fp) == 16:
                with contextlib.suppress(ValueError):  # not hex: no fingerprint, the row is simply read again
                    self.add_row(int(row_fp, 16))


# The start of a line as ``ingest.results.record.Result.to_line`` writes it: the four fields a resume needs, first.
# JSON escaping guarantees these patterns cannot occur inside a string value, so no full parse is needed.
_KEY_PREFIX = b'{"key":"'
_SUCCEEDED_INFIX = b'","status":"succeeded","body_sha256":"'
_SHA_END = len(_SUCCEEDED_INFIX) + 64
_FAST = re.compile(
    rb'\{"key":"([^"\\]*)","status":"([a-z]+)","body_sha256":(?:null|"([0-9a-f]{64})"),"error":(null|\{)'
)
_RETRYABLE = b'"retryable":true'
_HEX8 = re.compile(rb"[0-9a-f]{8}")
_ROW_FP_TAG = b',"row_fp":"'  # the last field, when present: ,"row_fp":"<16 hex>"}\n
_ROW_FP_FROM_END = len(_ROW_FP_TAG) + 16 + 3


def _fold_row_fp(index: ResumeIndex, raw: bytes) -> None:
    if raw.startswith(_ROW_FP_TAG, len(raw) - _ROW_FP_FROM_END) and raw.endswith(b'"}\n'):
        try:
            index.add_row(int(raw[-19:-3], 16))
        except ValueError:
            return  # not hex: no fingerprint, the row is simply read again


def fold_line(index: ResumeIndex, raw: bytes, *, own: bool = True) -> bool:
    """Fold one complete line in; False when it is not a record."""
    if raw.startswith(RUN_RECORD_PREFIX):  # a run's own record (``ingest.results.runlog``), not an item's
        if own:
            with contextlib.suppress(orjson.JSONDecodeError):
                record = orjson.loads(raw)
                if isinstance(record, dict):
                    index.history.add(record)
        return True
    if raw.startswith(_KEY_PREFIX):
        # The common case, a success written by us: fixed offsets, no regex, no decoding.
        end = raw.find(b'"', 8)
        if (
            raw.startswith(_SUCCEEDED_INFIX, end)
            and len(raw) > end + _SHA_END  # a torn line may end early, then an editor's newline
            and raw[end + _SHA_END] == 0x22
            and b"\\" not in raw[8:end]
            and _HEX8.fullmatch(raw, end + len(_SUCCEEDED_INFIX), end + len(_SUCCEEDED_INFIX) + 8)
        ):
            sha_start = end + len(_SUCCEEDED_INFIX)
            body_fp = int(raw[sha_start : sha_start + 8], 16) & _BODY_MASK
            index.table.put(fingerprint_bytes(raw[8:end]), body_fp << 2 | _SUCCEEDED)  # a success always wins
            _fold_row_fp(index, raw)
            return True
    match = _FAST.match(raw)
    if match is not None:
        key, status, sha, error = match.groups()
        retryable = error != b"null" and raw.find(_RETRYABLE, match.end()) != -1
        index.put(key.decode(), status.decode(), sha.decode() if sha else None, retryable)
        if status == b"succeeded":
            _fold_row_fp(index, raw)
        return True
    try:
        record = orjson.loads(raw)  # written by another version or tool: parse it whole
    except orjson.JSONDecodeError:
        return False
    if not isinstance(record, dict):
        return False
    index.add(record)
    return True


def load_index(path: Path, *, with_family: bool = True) -> ResumeIndex:
    """Read ``path`` (and, by default, its ``family``) into a ``ResumeIndex``; streaming, one pass per file.

    Torn tails and ``repair_offset`` describe ``path`` only: it is the one file this run will append to.
    """
    files = family(path) if with_family else [path]
    index = ResumeIndex(expected=sum(_estimate_records(p) for p in files if p.exists()))
    for other in family(path)[:-1] if with_family else []:
        _read_into(index, other, own=False)
    if path.exists():
        _read_into(index, path, own=True)
    return index


def _read_into(index: ResumeIndex, path: Path, *, own: bool, start: int = 0) -> None:
    """Fold every complete line of ``path`` (from byte ``start``, a line's start) in (``ingest.results.lines``); a
    line longer than ``MAX_RECORD_BYTES`` (``None`` there) is counted as unreadable."""
    number = index.own_lines if own else 0
    with path.open("rb") as file:
        lines = CompleteLines(file, start=start)
        for _, raw in lines:
            number += 1
            index.lines_read += 1
            if own:
                index.own_lines = number
            if raw is not None and (fold_line(index, raw, own=own) or not raw.strip()):  # records first: no copy
                continue
            index.unreadable_count += 1
            if len(index.unreadable_lines) < 20 and own:
                index.unreadable_lines.append(number)
    if own:
        index.covered = lines.end
        if lines.torn:
            index.torn_tail = True
            index.repair_offset = lines.end


def fold_tail(index: ResumeIndex, path: Path) -> None:
    """Fold the lines of ``path`` (the run's own file) past ``index.covered`` in: what was appended since."""
    _read_into(index, path, own=True, start=index.covered)


def _estimate_records(path: Path) -> int:
    """Records in a results file, from its size and its first lines' length (sizes the table once)."""
    size = path.stat().st_size
    with path.open("rb") as file:
        head = file.read(1 << 16)
    lines = head.count(b"\n")
    if not lines:
        return 0
    # Whole lines only (a partial last line made the average too long, the estimate short, and the table grow once:
    # a rehash of every key), plus 5% for lines shorter than the first ones.
    return int(size / ((head.rindex(b"\n") + 1) / lines) * 1.05) + 64


def repair(path: Path, index: ResumeIndex) -> None:
    """Drop a torn last line so the next record starts on a line of its own."""
    if index.repair_offset is None:
        return
    with path.open("r+b") as file:
        file.truncate(index.repair_offset)
        file.flush()
        os.fsync(file.fileno())
