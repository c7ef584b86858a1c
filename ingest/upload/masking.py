"""Masking the API key out of everything a server sends back before any of it is stored or shown.

A server (or a proxy before it) may echo the ``Authorization`` header: raw in a body, ``\\u``-escaped inside a JSON
string (legal JSON, invisible to a byte search), or in a response header such as ``X-Request-Id``. ``SecretMask``
masks the raw bytes first (cheap, and usually a no-op), then the decoded strings of whatever will be stored.
"""

from __future__ import annotations

from typing import Any

MASK = "***"


class SecretMask:
    """Replaces every part of the key (``ApiKey.parts()``) by ``***``: in bytes, strings and decoded JSON values."""

    def __init__(self, secrets: list[str]) -> None:
        self._texts = sorted(secrets, key=len, reverse=True)  # the whole key before its parts
        self._bytes = [secret.encode() for secret in self._texts]

    def __repr__(self) -> str:
        return f"SecretMask(secrets={len(self._texts)})"

    def payload(self, raw: bytes) -> bytes:
        """``raw`` with each secret's bytes masked (a C-speed search)."""
        for secret in self._bytes:
            if secret in raw:
                raw = raw.replace(secret, MASK.encode())
        return raw

    def text(self, value: str) -> str:
        """``value`` with each secret masked."""
        for secret in self._texts:
            if secret in value:
                value = value.replace(secret, MASK)
        return value

    def optional(self, value: str | None) -> str | None:
        """``text`` for a value that may be absent (a header)."""
        return None if value is None else self.text(value)

    def value(self, value: Any) -> Any:
        """A decoded JSON value with every string in it (keys included) masked."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(item) for item in value]
        return value
