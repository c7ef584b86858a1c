"""API credentials, found in fal's own order, held so they cannot leak by accident.

1. ``FAL_KEY``;
2. else ``FAL_KEY_ID`` + ``FAL_KEY_SECRET``, sent as ``id:secret``;
3. else a key file (setting ``key_file``), whose first non-empty line is the key.

``ApiKey`` never shows its value in ``repr``/``str``; the logging pipeline also redacts it (``ingest.logs``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ingest.errors import CredentialsError


class ApiKey:
    """A secret API key: use ``.header()`` to send it; printing it shows only a mask."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        value = value.strip()
        if not value or any(ch.isspace() or not ch.isprintable() for ch in value):
            raise CredentialsError("the API key is empty or contains whitespace or control characters")
        self._value = value  # the raw key; only header() and reveal() hand it out

    def header(self) -> str:
        """The ``Authorization`` header value fal expects."""
        return f"Key {self._value}"

    def reveal(self) -> str:
        """The raw key, for the log redactor's list of secrets and nothing else."""
        return self._value

    def parts(self) -> list[str]:
        """The key and, for ``id:secret`` keys, each part (4 characters or more): every string to mask."""
        return [part for part in dict.fromkeys([self._value, *self._value.split(":")]) if len(part) >= 4]

    def __repr__(self) -> str:
        return "ApiKey('***')"

    __str__ = __repr__


def resolve_api_key(env: Mapping[str, str] | None = None, *, key_file: Path | None = None) -> ApiKey:
    """Find the key in fal's order; a missing key is a ``CredentialsError`` (exit 2, nothing sent)."""
    env = os.environ if env is None else env
    if key := env.get("FAL_KEY", "").strip():
        return ApiKey(key)
    key_id, secret = env.get("FAL_KEY_ID", "").strip(), env.get("FAL_KEY_SECRET", "").strip()
    if key_id and secret:
        return ApiKey(f"{key_id}:{secret}")
    if key_id or secret:
        missing = "FAL_KEY_SECRET" if key_id else "FAL_KEY_ID"
        raise CredentialsError(f"FAL_KEY_ID and FAL_KEY_SECRET go together: {missing} is not set")
    if key_file is not None:
        return _read_key_file(key_file)
    raise CredentialsError(
        "no API key: set FAL_KEY (or FAL_KEY_ID and FAL_KEY_SECRET), or point the key_file setting at a file"
    )


def _read_key_file(path: Path) -> ApiKey:
    try:
        text = path.expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise CredentialsError(f"cannot read key file {path}: {exc.strerror}") from None
    for line in text.splitlines():
        if line.strip():
            return ApiKey(line)
    raise CredentialsError(f"key file {path} is empty")
