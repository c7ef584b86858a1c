"""The fake's answers and its reading of an upload request: the spec's error format, JSON answers carrying
``x-request-id``, the validated body (400 / 422 otherwise), and the fal-host check of strict mode."""

from __future__ import annotations

from urllib.parse import urlsplit

import orjson
from aiohttp import web
from pydantic import ValidationError

from ingest.models import ErrorType, UploadRequest

FAL_HOSTS = ("fal.media", "fal.ai", "fal.run")
MAX_BODY_BYTES = 1024 * 1024  # larger bodies get a 400 (the spec has no 413)
DOCS_URL = "https://docs.fal.ai/"


async def read_upload(request: web.Request, request_id: str) -> UploadRequest | web.Response:
    """The validated body of an upload request, or the 400/422 answer explaining why it is not one."""
    if not _is_json(request.content_type):
        return error_response(400, "validation_error", "Content-Type must be application/json", request_id)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        message = f"Request body is larger than {MAX_BODY_BYTES} bytes"
        return error_response(400, "validation_error", message, request_id)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return error_response(400, "validation_error", f"Request body is not valid JSON: {exc}", request_id)
    try:
        # strict: JSON types as the schema says (no "true" for a boolean); the model rejects unknown fields.
        return UploadRequest.model_validate(data, strict=True)
    except ValidationError as exc:
        return error_response(422, "validation_error", describe_validation_error(exc), request_id)


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each offending field and what is wrong with it."""
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
        for error in exc.errors(include_url=False)
    )
    return f"Invalid request body: {problems}"


def error_response(
    status: int, error_type: ErrorType, message: str, request_id: str, headers: dict[str, str] | None = None
) -> web.Response:
    """An answer in the spec's standard error format, carrying ``request_id`` in the body and the header."""
    error = {"type": error_type, "message": message, "request_id": request_id, "docs_url": DOCS_URL}
    return json_response(status, orjson.dumps({"error": error}), request_id, headers)


def json_response(status: int, body: bytes, request_id: str, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer with its ``x-request-id`` header."""
    all_headers = {"x-request-id": request_id}
    if headers:
        all_headers.update(headers)
    return web.Response(status=status, body=body, content_type="application/json", headers=all_headers)


def is_fal_host(url: str) -> bool:
    """Whether ``url``'s host is one of fal's (or a subdomain of one)."""
    host = (urlsplit(url).hostname or "").lower()
    return any(host == suffix or host.endswith("." + suffix) for suffix in FAL_HOSTS)


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")
