"""Pydantic models that mirror ``spec/assets-upload.openapi.yaml`` exactly.

- ``UploadRequest``: the JSON body of ``POST /assets/uploads``.
- ``Asset`` / ``Tag`` / ``UploadResponse``: the 201 response (all 16 asset fields required,
  nullability as in the spec).
- ``ApiErrorBody`` / ``ErrorEnvelope``: the standard error response
  ``{"error": {type, message, docs_url?, request_id?}}``.

``tests/test_models_spec.py`` reads the spec and checks required fields, enums and bounds against these models,
so a change to either side is caught.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

AssetType = Literal["image", "video", "audio", "3d"]
ASSET_TYPES: tuple[str, ...] = ("image", "video", "audio", "3d")

ErrorType = Literal[
    "authorization_error",
    "validation_error",
    "not_found",
    "rate_limited",
    "server_error",
    "not_implemented",
]

PROMPT_MAX_LENGTH = 2000
URL_MAX_LENGTH = 8192  # not in the spec; a sanity bound so a hostile manifest cannot send megabyte URLs

Prompt = Annotated[str, Field(min_length=1, max_length=PROMPT_MAX_LENGTH)]


def check_absolute_http_url(value: str) -> str:
    """Return ``value`` unchanged if it is an absolute http(s) URI with a host, else raise ``ValueError``.

    The string is kept verbatim (no normalisation): it is part of the idempotency identity and of the body hash.
    """
    if len(value) > URL_MAX_LENGTH:
        raise ValueError(f"URL is longer than {URL_MAX_LENGTH} characters")
    if _PLAIN_HTTP_URL.fullmatch(value) is not None:
        return value  # the common shape, which every check of the full path accepts: no need to run them
    return check_url_fully(value)


def check_url_fully(value: str) -> str:
    """``check_absolute_http_url`` without its fast path (a test holds the two equal on the fast path's shape)."""
    # Fast path first: printable ASCII without spaces (almost every URL) has no whitespace or control characters.
    if not (value.isascii() and value.isprintable() and " " not in value) and (
        value != value.strip() or any(ch.isspace() or ord(ch) < 0x20 for ch in value)
    ):
        if " " in value.strip() and not any((ch.isspace() and ch != " ") or ord(ch) < 0x20 for ch in value.strip()):
            raise ValueError(_not_uri_message(value, value.index(" ", len(value) - len(value.lstrip()))))
        raise ValueError("URL must not contain whitespace or control characters")
    if (at := _not_uri_at(value)) is not None:
        raise ValueError(_not_uri_message(value, at))
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https"):
        shown = f"'{parts.scheme}:'" if parts.scheme else "none"
        raise ValueError(f"URL must be absolute with an http or https scheme (scheme: {shown})")
    if not parts.hostname:
        raise ValueError("URL must have a host")
    return value


# An http(s) URL of the plainest shape: a host of letters, digits, dots and hyphens (no port, no userinfo), then a
# path of unreserved and sub-delim characters (no "%", "?" or "#"). Each check of ``check_absolute_http_url`` accepts
# all of them (tests/manifest/test_tolerances.py holds the two paths equal); anything else takes the full checks.
_PLAIN_HTTP_URL = re.compile(r"[hH][tT][tT][pP][sS]?://[A-Za-z0-9.\-]+(?:/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*)?")

# What RFC 3986 lets a URI hold: unreserved, reserved and "%" (checked as an escape below). Anything else — non-ASCII
# (an IRI: see ingest.manifest.uri), a space, <>"{}|\\^` — no URI may hold.
_NOT_URI_CHAR = re.compile(r"[^A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _not_uri_at(url: str) -> int | None:
    """Where ``url`` stops being a URI: the first character no URI holds, malformed escape, or the character after
    the first ``#`` when a second one follows; ``None`` for a URI. (Three cheap scans: one regex with the three
    alternatives cost 3× as much on every row.)"""
    found = []
    if (bad := _NOT_URI_CHAR.search(url)) is not None:
        found.append(bad.start())
    if "%" in url and (bad := _BAD_ESCAPE.search(url)) is not None:
        found.append(bad.start())
    if url.count("#") > 1:
        found.append(url.index("#") + 1)
    return min(found) if found else None


def _not_uri_message(url: str, at: int) -> str:
    """Where ``url`` stops being a URI, and what to write instead."""
    context = url[max(0, at - 20) : at + 10]
    where = f"at character {at + 1} ({'…' if at > 20 else ''}{context}{'…' if at + 10 < len(url) else ''})"
    ch = url[at]
    if ch == " ":
        return f"URL has a space {where}: a URI cannot hold one; write it as %20"
    if ch == "%":
        return f"URL has a malformed escape {url[at : at + 3]!r} {where}: '%' must start two hex digits (%25 is '%')"
    if "#" in url[: at + 1] and url.count("#") > 1:  # the pattern matches just after the first "#"
        second = url.index("#", url.index("#") + 1)
        return f"URL has a second '#' at character {second + 1}: a URI has one fragment; write a literal '#' as %23"
    if not ch.isascii():
        return f"URL has the non-ASCII character {ch!r} {where}: a URI must percent-encode it (as UTF-8 octets)"
    return f"URL has {ch!r} {where}: a URI cannot hold it; percent-encode it as %{ord(ch):02X}"


class UploadRequest(BaseModel):
    """The request body of ``uploadAsset``; unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    type: AssetType
    prompt: Prompt | None = None
    collection_id: str | None = None
    favorite: bool = False
    tag_ids: list[str] = Field(default_factory=list)

    @field_validator("url")
    @classmethod
    def _url_is_absolute_http(cls, value: str) -> str:
        return check_absolute_http_url(value)

    def body(self) -> dict[str, Any]:
        """The canonical JSON body: fields equal to their spec default are left out, so that an explicit
        ``favorite: false`` and an absent ``favorite`` are the same request (same body hash).

        Equal to ``model_dump(mode="json", exclude_defaults=True)`` (a test holds them equal), built by hand
        because this runs once per manifest row and is five times faster.
        """
        body: dict[str, Any] = {"url": self.url, "type": self.type}
        if self.prompt is not None:
            body["prompt"] = self.prompt
        if self.collection_id is not None:
            body["collection_id"] = self.collection_id
        if self.favorite:
            body["favorite"] = True
        if self.tag_ids:
            body["tag_ids"] = list(self.tag_ids)
        return body

    def body_bytes(self) -> bytes:
        """The canonical body serialised with sorted keys: what is sent and what ``body_sha256`` hashes."""
        return canonical_bytes(self.body())


def canonical_bytes(body: dict[str, Any]) -> bytes:
    """A request body as sent: JSON with sorted keys (so equal bodies are equal bytes)."""
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


class Tag(BaseModel):
    """An asset tag as returned by the API."""

    model_config = ConfigDict(extra="allow")

    id: str
    name: str
    created_at: str | None


class Asset(BaseModel):
    """The ``asset`` object of a 201 response: every field is required; nullable ones may be ``null``."""

    model_config = ConfigDict(extra="allow")

    vector_id: str
    request_id: str | None
    url: str | None
    type: AssetType
    title: str
    endpoint: str | None
    created_at: str | None
    source: str | None
    prompt: str | None
    width: int | float | None
    height: int | float | None
    content_type: str | None
    is_favorited: bool
    collection_ids: list[str]
    tags: list[Tag]
    similarity: int | float | None


class UploadResponse(BaseModel):
    """The 201 response body."""

    model_config = ConfigDict(extra="allow")

    asset: Asset


_NULLABLE_STR = (str, type(None))
_NUMBER = (int, float, type(None))  # exact types: a bool is not a number here (the model decides such a case)
_ASSET_FIELDS: dict[str, tuple[type, ...]] = {
    "vector_id": (str,),
    "request_id": _NULLABLE_STR,
    "url": _NULLABLE_STR,
    "title": (str,),
    "endpoint": _NULLABLE_STR,
    "created_at": _NULLABLE_STR,
    "source": _NULLABLE_STR,
    "prompt": _NULLABLE_STR,
    "width": _NUMBER,
    "height": _NUMBER,
    "content_type": _NULLABLE_STR,
    "is_favorited": (bool,),
    "collection_ids": (list,),
    "tags": (list,),
    "similarity": _NUMBER,
}
_ABSENT = object()


def asset_conforms(asset: dict[str, Any]) -> bool:
    """Whether the decoded ``asset`` of a 201 has every field of ``Asset`` with a JSON value of exactly the spec's
    type: then ``UploadResponse`` validation cannot fail, and is skipped (it cost ~3% of a run's CPU per item).
    ``False`` only means "ask the model": it is stricter than the model's lax mode, never looser."""
    for name, types in _ASSET_FIELDS.items():
        if type(asset.get(name, _ABSENT)) not in types:
            return False
    kind = asset.get("type")
    if type(kind) is not str or kind not in ASSET_TYPES:
        return False
    if any(type(collection) is not str for collection in asset["collection_ids"]):
        return False
    for tag in asset["tags"]:
        if type(tag) is not dict or type(tag.get("id")) is not str or type(tag.get("name")) is not str:
            return False
        if type(tag.get("created_at", _ABSENT)) not in _NULLABLE_STR:
            return False
    return True


class ApiErrorBody(BaseModel):
    """The ``error`` object of the standard error response."""

    model_config = ConfigDict(extra="allow")

    type: ErrorType
    message: str
    docs_url: str | None = None
    request_id: str | None = None


class ErrorEnvelope(BaseModel):
    """The standard error response format: ``{"error": {...}}``."""

    model_config = ConfigDict(extra="allow")

    error: ApiErrorBody
