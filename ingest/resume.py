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

import enum
import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import orjson

_SUCCEEDED, _FAILED_PERMANENT, _FAILED_RETRYABLE = 1, 2, 3
_FINGERPRINT_HEX = 16  # first 64 bits of body_sha256 are enough to notice an edited row


class Verdict(enum.Enum):
    """What a rerun does with an item whose key it has seen before."""

    SEND = "send"
    SKIP_DONE = "skip_done"
    SKIP_FAILED = "skip_failed"
    CHANGED = "changed"
    OTHER_SHARD = "other_shard"  # not this shard's item (``--shard``); another process handles it


@dataclass(slots=True)
class ResumeIndex:
    """Per key: (state, body fingerprint, where it was first recorded). Built by ``load_index``."""

    # key -> (state, body fingerprint as int, "manifest:line" of the deciding record)
    entries: dict[str, tuple[int, int, str]] = field(default_factory=dict)
    lines_read: int = 0  # complete lines in the file
    unreadable_lines: list[int] = field(default_factory=list)  # line numbers that were not valid records (first 20)
    unreadable_count: int = 0
    torn_tail: bool = False  # the last line had no newline and was ignored
    repair_offset: int | None = None  # where to truncate the file to drop the torn tail

    def __repr__(self) -> str:
        return (
            f"ResumeIndex(keys={len(self.entries)}, lines_read={self.lines_read}, "
            f"unreadable={self.unreadable_count}, torn_tail={self.torn_tail})"
        )

    def __len__(self) -> int:
        return len(self.entries)

    def decide(self, key: str, body_sha256: str, *, retry_failed: bool) -> tuple[Verdict, str | None]:
        """The verdict for ``key`` and, for ``CHANGED``, where the earlier version was recorded."""
        entry = self.entries.get(key)
        if entry is None:
            return Verdict.SEND, None
        state, fingerprint, where = entry
        same_body = fingerprint == _fingerprint(body_sha256)
        if state == _SUCCEEDED:
            return (Verdict.SKIP_DONE, None) if same_body else (Verdict.CHANGED, where)
        if state == _FAILED_PERMANENT and same_body and not retry_failed:
            return Verdict.SKIP_FAILED, None
        return Verdict.SEND, None

    def add(self, record: dict[str, object]) -> None:
        """Fold one record into the index (later records win, but a success is never undone)."""
        key, status = record.get("key"), record.get("status")
        if not isinstance(key, str) or status not in ("succeeded", "failed"):
            return
        sha = record.get("body_sha256")
        fingerprint = _fingerprint(sha) if isinstance(sha, str) else -1
        if status == "succeeded":
            state = _SUCCEEDED
        else:
            previous = self.entries.get(key)
            if previous is not None and previous[0] == _SUCCEEDED:
                return
            error = record.get("error")
            retryable = isinstance(error, dict) and bool(error.get("retryable"))
            state = _FAILED_RETRYABLE if retryable else _FAILED_PERMANENT
        self.entries[key] = (state, fingerprint, f"{record.get('manifest')}:{record.get('line')}")


def _fingerprint(sha_hex: str) -> int:
    try:
        return int(sha_hex[:_FINGERPRINT_HEX], 16)
    except ValueError:
        return -1


_SHARD_TAG = re.compile(r"\.shard-\d+-of-\d+$")


def family(path: Path) -> list[Path]:
    """The results files that describe the same job as ``path``: its base file (``x.results.jsonl``) and every shard
    file beside it (``x.results.shard-K-of-N.jsonl``, written by ``--shard`` or ``--processes``), existing ones
    only, ``path`` itself last. Reading them all lets a run resume whatever shard layout earlier runs used."""
    stem = _SHARD_TAG.sub("", path.stem)
    base = path.with_name(stem + path.suffix)
    shards = sorted(path.parent.glob(f"{glob.escape(stem)}.shard-*-of-*{path.suffix}"))
    return [p for p in [base, *shards] if p != path and p.exists()] + [path]


def load_index(path: Path, *, with_family: bool = True) -> ResumeIndex:
    """Read ``path`` (and, by default, its ``family``) into a ``ResumeIndex``; streaming, one pass per file.

    Torn tails and ``repair_offset`` describe ``path`` only: it is the one file this run will append to.
    """
    index = ResumeIndex()
    for other in family(path)[:-1] if with_family else []:
        _read_into(index, other, own=False)
    if path.exists():
        _read_into(index, path, own=True)
    return index


def _read_into(index: ResumeIndex, path: Path, *, own: bool) -> None:
    offset = 0
    with path.open("rb") as file:
        for number, raw in enumerate(file, start=1):
            if not raw.endswith(b"\n"):
                if own:
                    index.torn_tail = True
                    index.repair_offset = offset
                break
            offset += len(raw)
            index.lines_read += 1
            if not raw.strip():
                continue
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                record = None
            if not isinstance(record, dict):
                index.unreadable_count += 1
                if len(index.unreadable_lines) < 20 and own:
                    index.unreadable_lines.append(number)
                continue
            index.add(record)


def repair(path: Path, index: ResumeIndex) -> None:
    """Drop a torn last line so the next record starts on a line of its own."""
    if index.repair_offset is None:
        return
    with path.open("r+b") as file:
        file.truncate(index.repair_offset)
        file.flush()
        os.fsync(file.fileno())
