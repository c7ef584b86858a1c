"""The idempotency store: what the server remembers about each ``Idempotency-Key``.

A key is in one of three states: unseen, in progress (a request holding it is being processed), or done
(its 201 is stored, with the hash of the body that created it). The rules follow Stripe's and the IETF
draft ``draft-ietf-httpapi-idempotency-key-header``:

- unseen -> the caller claims it (``begin`` returns ``Verdict.PROCEED``), then must ``commit`` or ``release``;
- done, same body -> the stored response, replayed byte for byte;
- done or in progress, other body -> ``Verdict.PAYLOAD_CHANGED`` (422: a permanent client error);
- in progress, same body -> ``Verdict.IN_PROGRESS`` (409: retry later).

Only successful creations are committed, so a failed attempt leaves the key unseen for the retry.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Verdict(enum.Enum):
    """What to do with a request whose key has no stored response to replay."""

    PROCEED = "proceed"  # the key was unseen: the caller now holds it
    IN_PROGRESS = "in_progress"  # another request with this key and body is being processed
    PAYLOAD_CHANGED = "payload_changed"  # the key belongs to another body


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """The answer remembered for a key, and the body hash it answered."""

    body_sha256: str
    status: int
    body: bytes
    stored_at: float  # monotonic time, for the TTL


class IdempotencyStore:
    """Keys in progress and keys done; done keys expire after ``ttl_s`` (``None``: never)."""

    def __init__(self, *, ttl_s: float | None) -> None:
        self._ttl_s = ttl_s  # how long a done key is remembered
        self._done: dict[str, StoredResponse] = {}  # key -> its stored answer
        self._in_progress: dict[str, str] = {}  # key -> body hash of the request holding it

    def begin(self, key: str, body_sha256: str, *, now: float) -> StoredResponse | Verdict:
        """Look ``key`` up for a request with this body hash; claim it when unseen."""
        stored = self._lookup(key, now)
        if stored is not None:
            return stored if stored.body_sha256 == body_sha256 else Verdict.PAYLOAD_CHANGED
        holder = self._in_progress.get(key)
        if holder is not None:
            return Verdict.IN_PROGRESS if holder == body_sha256 else Verdict.PAYLOAD_CHANGED
        self._in_progress[key] = body_sha256
        return Verdict.PROCEED

    def commit(self, key: str, response: StoredResponse) -> None:
        """Remember ``response`` as the answer for ``key``, which is no longer in progress."""
        self._done[key] = response
        self._in_progress.pop(key, None)

    def release(self, key: str) -> None:
        """Give up a claim without storing anything (the attempt failed); no-op once committed."""
        self._in_progress.pop(key, None)

    def clear(self) -> None:
        """Forget every key."""
        self._done.clear()
        self._in_progress.clear()

    def _lookup(self, key: str, now: float) -> StoredResponse | None:
        stored = self._done.get(key)
        if stored is not None and self._ttl_s is not None and now - stored.stored_at > self._ttl_s:
            del self._done[key]  # expired: the key is unseen again, as on a server that forgot it
            return None
        return stored

    def __len__(self) -> int:
        return len(self._done)

    def __repr__(self) -> str:
        done, in_progress = len(self._done), len(self._in_progress)
        return f"IdempotencyStore(done={done}, in_progress={in_progress}, ttl_s={self._ttl_s})"
