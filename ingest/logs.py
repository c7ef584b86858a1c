"""structlog set-up: stable dotted event names, JSON lines on stderr for machines, a console renderer on a
terminal, the run id bound once, and every secret redacted before any renderer sees it.

Event names used by ``ingest`` (stable; tests assert on them with ``structlog.testing.capture_logs``):
``run.started``, ``run.progress``, ``run.summary``, ``run.aborted``, ``run.interrupted``, ``run.signal``,
``run.limit_reached``, ``run.max_duration_reached``, ``resume.loaded``, ``resume.repaired``,
``resume.unreadable_lines``, ``manifest.unknown_columns``, ``manifest.non_fal_host``, ``row.invalid``,
``item.duplicate``, ``item.changed``, ``upload.succeeded``, ``upload.retry``, ``upload.failed``,
``upload.unexpected_response``, ``limiter.paused``, ``auth.rejected``, ``metrics.serving``, ``manifest.changed``,
``results.write_failed``, ``metrics.write_failed``, ``preflight.ok``, ``preflight.degraded``, ``preflight.failed``,
``service.outage``, ``service.recovered``, ``service.unavailable``, ``results.foreign``, ``results.elsewhere``,
``results.replays``, ``settings.unknown_variable``, ``run.summary_text``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import orjson
import structlog

from ingest.terminal import for_terminal

REDACTED = "***"

_secrets: list[str] = []  # the values the redactor masks; set once per process by configure_logging


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        for secret in _secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {key: _redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(item) for item in value]
    if isinstance(value, BaseException):
        return _redact_value(f"{type(value).__name__}: {value}")
    return value


def redact(text: str) -> str:
    """``text`` with every registered secret masked: for anything printed outside the log pipeline."""
    result: str = _redact_value(text)
    return result


def redact_secrets(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: masks every registered secret anywhere in the event."""
    if not _secrets:
        return event_dict
    for key, value in list(event_dict.items()):
        event_dict[key] = _redact_value(value)
    return event_dict


def _safe_value(value: Any) -> Any:
    if isinstance(value, str):
        return for_terminal(value)
    if isinstance(value, dict):
        return {key: _safe_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_safe_value(item) for item in value]
    return value


def terminal_safe(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: control characters in any value (a server's message, a manifest cell) are shown
    escaped (``ingest.terminal``), in console and JSON lines alike: people read both on a terminal."""
    for key, value in list(event_dict.items()):
        event_dict[key] = _safe_value(value)
    return event_dict


def add_secret(secret: str) -> None:
    """Register a value that must never be logged (the API key, and its ``id:secret`` parts)."""
    for part in {secret, *secret.split(":")}:
        if len(part) >= 4 and part not in _secrets:
            _secrets.append(part)
    _secrets.sort(key=len, reverse=True)  # mask the whole key before its parts


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is now, so a live progress display that redirects stderr
    (``rich``) can place log lines above itself instead of tearing through it."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def json_logs(fmt: str, stream: Any = None) -> bool:
    """Whether ``configure_logging(fmt=fmt)`` renders JSON lines (``auto``: when not on a terminal)."""
    return fmt == "json" or (fmt == "auto" and not (stream or sys.stderr).isatty())


def configure_logging(
    *,
    fmt: str = "auto",
    level: str = "info",
    stream: TextIO | None = None,
    secrets: Iterable[str] = (),
) -> None:
    """Configure structlog for the process; call once at start-up (the CLI does)."""
    for secret in secrets:
        add_secret(secret)
    target: Any = stream or _CurrentStderr()
    console = fmt == "console" or (fmt == "auto" and target.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=target.isatty())
        if console
        else structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_secrets,
            terminal_safe,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=target),
        cache_logger_on_first_use=False,
    )
