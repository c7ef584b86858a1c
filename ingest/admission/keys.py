"""Deterministic idempotency keys and body hashes (``docs/design.md`` § Idempotency key).

An item's key comes from its identity, never from its position or its batch:
``uuid5(namespace, canonical(identity))`` where the identity is the item's ``url`` by default, or the fields named
by ``key_fields``. The namespace is ``INGEST_NAMESPACE``, or ``uuid5(INGEST_NAMESPACE, key_namespace)`` when a user
sets ``key_namespace`` to deliberately re-ingest a library. A row's explicit ``idempotency_key`` wins, verbatim.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

from ingest.models import UploadRequest

# Fixed for this project forever: changing it would change every key and re-upload every library.
INGEST_NAMESPACE = uuid.UUID("6f1c5c1e-4d0b-5b8e-9a57-3b0f1a2d9c47")

KEYABLE_FIELDS = frozenset(UploadRequest.model_fields)


def namespace_for(key_namespace: str | None) -> uuid.UUID:
    """The UUID namespace keys are derived in: the project's, or one derived from the user's ``key_namespace``."""
    if not key_namespace:
        return INGEST_NAMESPACE
    return uuid.uuid5(INGEST_NAMESPACE, key_namespace)


def canonical_identity(body: dict[str, object], key_fields: Sequence[str]) -> str:
    """The identity string hashed into the key.

    With the default ``("url",)`` it is the URL itself; with more fields it is the sorted-key JSON of those fields
    (absent fields as ``null``), so that field order in the manifest and the manifest's format never matter.
    """
    if len(key_fields) == 1 and key_fields[0] == "url":
        return str(body["url"])
    identity = {name: body.get(name) for name in key_fields}
    return orjson.dumps(identity, option=orjson.OPT_SORT_KEYS).decode()


def body_sha256(body_bytes: bytes) -> str:
    """Hex SHA-256 of the canonical request body: what a rerun compares to notice a row that changed."""
    return hashlib.sha256(body_bytes).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyDeriver:
    """Derives keys for one run's settings; built once, used for every row."""

    key_fields: tuple[str, ...] = ("url",)
    key_namespace: str | None = None
    # the resolved UUID namespace (derived once, not per row)
    namespace: uuid.UUID = field(init=False)

    def __post_init__(self) -> None:
        unknown = [name for name in self.key_fields if name not in KEYABLE_FIELDS]
        if unknown or not self.key_fields:
            known = ", ".join(sorted(KEYABLE_FIELDS))
            raise ValueError(f"key_fields must name request fields ({known}); got {list(self.key_fields)}")
        object.__setattr__(self, "namespace", namespace_for(self.key_namespace))

    def derive(self, body: dict[str, object], explicit: str | None = None) -> str:
        """The item's key: ``explicit`` verbatim when given, else the UUIDv5 of its identity."""
        if explicit:
            return explicit
        return uuid5_str(self.namespace.bytes, canonical_identity(body, self.key_fields))


def uuid5_str(namespace: bytes, name: str) -> str:
    """``str(uuid.uuid5(UUID(bytes=namespace), name))`` without building UUID objects (RFC 4122 §4.3): a third of
    the cost, on a path taken once per manifest row."""
    digest = bytearray(hashlib.sha1(namespace + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def row_salt(options: object, keys: KeyDeriver, *, require_fal_host: bool = False) -> bytes:
    """What a manifest line's fingerprint is salted with (``ingest.manifest.skip``; the reader adds what it detected
    about the file): every setting that turns a line into a key and a body, so that the same bytes read with other
    settings are never taken for a finished row."""
    text = repr((1, options, keys.key_fields, keys.key_namespace, require_fal_host))
    return hashlib.blake2b(text.encode(), digest_size=16).digest()
