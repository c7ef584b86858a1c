"""Shards: ``--shard K/N`` takes the items whose key hashes to K, so N processes or machines split one job.

The hash is of the idempotency key (SHA-256, not Python's salted ``hash``), so a rerun of shard K sees exactly
the same items on any machine, and two rows with the same key always land in the same shard (duplicates are still
caught). Invalid rows have no reliable key: the shard whose number is ``line % N`` records them, so each invalid
row is reported exactly once across the shards.

When K is not given, it is read from Kubernetes Indexed Jobs' ``JOB_COMPLETION_INDEX``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass

from ingest.errors import UsageError

JOB_INDEX_ENV = "JOB_COMPLETION_INDEX"


@dataclass(frozen=True, slots=True)
class Shard:
    """This process's part of the key space: ``index`` of ``count``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns_key(self, key: str) -> bool:
        """Whether the item with this key belongs to this shard."""
        digest = hashlib.sha256(key.encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index

    def owns_line(self, line: int) -> bool:
        """Whether this shard records the invalid row at ``line``."""
        return line % self.count == self.index


def parse_shard(text: str | None, env: Mapping[str, str] | None = None) -> Shard | None:
    """``"K/N"``, or ``"/N"`` / ``"N"`` with K from ``JOB_COMPLETION_INDEX``; ``None`` when not sharded."""
    if text is None or text == "":
        return None
    env = os.environ if env is None else env
    index_text, _, count_text = text.rpartition("/")
    if not index_text:
        index_text = env.get(JOB_INDEX_ENV, "")
        if not index_text:
            raise UsageError(f"--shard {text}: give K/N, or set {JOB_INDEX_ENV} (Kubernetes Indexed Job)")
    try:
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise UsageError(f"--shard must look like K/N (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"--shard {index}/{count}: need N >= 1 and 0 <= K < N")
    return Shard(index, count)
