"""The server's announced quota: ``RateLimit-Policy`` / ``RateLimit`` (and the older trio) read into a ``Quota``.

Two generations of draft-ietf-httpapi-ratelimit-headers are read, on every answer (a 201 included):

- **-07 and later**, structured fields (RFC 8941 lists): ``RateLimit-Policy: "default";q=100;w=1`` (``q`` requests
  per ``w`` seconds; several policies may be listed) and ``RateLimit: "default";r=42;t=3`` (``r`` requests left,
  ``t`` seconds until the quota resets);
- **-06 and earlier**: ``RateLimit-Limit: 100`` (or ``100, 100;w=60``), ``RateLimit-Remaining: 0``,
  ``RateLimit-Reset: 3``.

What a ``Quota`` means to the limiter (``RateLimiter.advise``): ``ceiling``, the lowest ``q / w`` of the policies,
caps the effective rate (never raising it above ``--rate``); ``exhausted_for``, when ``r`` (or ``-Remaining``) is 0,
is how long nobody may send. A policy without ``w`` is read as ``w = 1``, the shortest window a server can mean
(windows are whole seconds), so the ceiling is the highest rate it could allow: never a slower run than no header.
A policy over more than ``MAX_RATE_WINDOW`` seconds (a daily quota) is no ceiling: it may be spent at any pace, and
its ``r=0`` says when it is spent.
A header that does not parse is ignored and logged once per run and header name (``QuotaReader``); a ``Quota`` is
only built when a header says something.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

log = structlog.get_logger("ingest.upload.quota")

# A policy over a longer window is a quota, not a rate: spending it faster than q / w is allowed, and the server's
# "remaining 0" says when it is spent. Only policies up to this window cap the rate.
MAX_RATE_WINDOW = 60.0  # seconds
MAX_RESET = 3600.0  # seconds: a longer "reset" is clamped (retry.max_server_wait applies to the wait itself)
_KEY = re.compile(r"[a-z*][a-z0-9_.*-]*")
_NUMBER = re.compile(r"-?\d{1,15}(?:\.\d{1,3})?")


class Malformed(ValueError):
    """A header that is not what its specification says."""


@dataclass(frozen=True, slots=True)
class Quota:
    """What one answer's headers say: the highest rate the policies allow, and how long the quota is spent for."""

    ceiling: float | None = None  # requests/s: the lowest q / w of the announced policies
    exhausted_for: float | None = None  # seconds nobody may send (remaining 0), else None


def _members(value: str) -> list[tuple[str, dict[str, float | bool]]]:
    """An RFC 8941 list of items with parameters: ``[(bare item, {param: value})]``; numbers only as values."""
    members: list[tuple[str, dict[str, float | bool]]] = []
    for raw in _split(value, ","):
        parts = _split(raw, ";")
        if not parts or not parts[0].strip():
            raise Malformed("an empty list member")
        params: dict[str, float | bool] = {}
        for part in parts[1:]:
            key, eq, val = part.strip().partition("=")
            if not _KEY.fullmatch(key):
                raise Malformed(f"bad parameter name {key!r}")
            val = val.strip()
            if not eq:
                params[key] = True
            elif _NUMBER.fullmatch(val):
                params[key] = float(val)
            elif val.startswith('"') or val in ("?0", "?1") or re.fullmatch(r"[A-Za-z*][\w:/!#$%&'*+.^`|~-]*", val):
                params[key] = True  # a string, token or boolean: not one this reader needs as a number
            else:
                raise Malformed(f"bad value for {key!r}")
        members.append((parts[0].strip(), params))
    return members


def _split(value: str, sep: str) -> list[str]:
    """``value`` split on ``sep`` outside double-quoted strings (RFC 8941 strings escape ``"`` and ``\\``)."""
    out: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in value:
        if quoted and escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            out.append("".join(current))
            current = []
            continue
        current.append(ch)
    if quoted:
        raise Malformed("an unterminated string")
    out.append("".join(current))
    return out


def _positive(params: Mapping[str, float | bool], key: str, *, default: float | None = None) -> float | None:
    value = params.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or value < 0 or (key in ("q", "w") and value == 0):
        raise Malformed(f"{key}={value!r} is not a usable number")
    return float(value)


def policy_ceiling(value: str) -> float | None:
    """The lowest ``q / w`` of a ``RateLimit-Policy`` value's rate policies (``w`` defaults to 1 s; see
    ``MAX_RATE_WINDOW``), or None when it lists only long-window quotas."""
    ceilings: list[float | None] = []
    for _name, params in _members(value):
        quota = _positive(params, "q")
        if quota is None:
            raise Malformed("a policy without q")
        ceilings.append(_rate(quota, _positive(params, "w", default=1.0) or 1.0))
    return _lowest(ceilings)


def _rate(quota: float, window: float) -> float | None:
    return quota / window if window <= MAX_RATE_WINDOW else None


def _lowest(ceilings: list[float | None]) -> float | None:
    rates = [c for c in ceilings if c is not None]
    return min(rates) if rates else None


def exhausted_for(value: str) -> float | None:
    """The longest ``t`` of the ``RateLimit`` members with ``r=0`` (0 when one has no ``t``), else None."""
    waits: list[float] = []
    for _name, params in _members(value):
        remaining = _positive(params, "r")
        reset = _positive(params, "t")
        if remaining is None:
            raise Malformed("a RateLimit member without r")
        if remaining < 1:
            waits.append(min(reset or 0.0, MAX_RESET))
    return max(waits) if waits else None


def legacy_limit(value: str) -> float | None:
    """``RateLimit-Limit``: a bare integer quota, or ``quota, quota;w=window, …``: the lowest quota ÷ window."""
    ceilings: list[float | None] = []
    for name, params in _members(value):
        if not _NUMBER.fullmatch(name) or float(name) <= 0:
            raise Malformed(f"quota {name!r} is not a positive number")
        ceilings.append(_rate(float(name), _positive(params, "w", default=1.0) or 1.0))
    return _lowest(ceilings)


def _legacy_seconds(value: str) -> float:
    if not _NUMBER.fullmatch(value.strip()) or float(value) < 0:
        raise Malformed(f"{value!r} is not a non-negative number")
    return float(value)


class QuotaReader:
    """Reads ``Quota`` from an answer's headers; remembers which headers it already warned about (one log each)."""

    __slots__ = ("_cache", "_warned")

    def __init__(self) -> None:
        self._warned: set[str] = set()
        self._cache: tuple[str, float | None] = ("", None)  # the last policy value and its ceiling (rarely changes)

    def __repr__(self) -> str:
        return f"QuotaReader(warned={sorted(self._warned)})"

    def read(self, headers: Mapping[str, str]) -> Quota | None:
        """The quota ``headers`` announce, or None when they announce none (or only malformed ones)."""
        policy, current = headers.get("RateLimit-Policy"), headers.get("RateLimit")
        limit, remaining = headers.get("RateLimit-Limit"), headers.get("RateLimit-Remaining")
        if policy is None and current is None and limit is None and remaining is None:
            return None
        ceiling = self._ceiling(policy) if policy is not None else None
        if ceiling is None and limit is not None:
            ceiling = self._parse("RateLimit-Limit", limit, legacy_limit)
        wait = self._parse("RateLimit", current, exhausted_for) if current is not None else None
        if wait is None and remaining is not None:
            left = self._parse("RateLimit-Remaining", remaining, _legacy_seconds)
            if left is not None and left < 1:
                reset = headers.get("RateLimit-Reset")
                wait = self._parse("RateLimit-Reset", reset, _legacy_seconds) if reset is not None else 0.0
                wait = None if wait is None else min(wait, MAX_RESET)
        if ceiling is None and wait is None:
            return None
        return Quota(ceiling, wait)

    def _ceiling(self, policy: str) -> float | None:
        if policy == self._cache[0]:
            return self._cache[1]
        ceiling = self._parse("RateLimit-Policy", policy, policy_ceiling)
        self._cache = (policy, ceiling)
        return ceiling

    def _parse(self, name: str, value: str, parse: Callable[[str], float | None]) -> float | None:
        try:
            return parse(value)
        except (Malformed, ValueError, OverflowError) as exc:
            if name not in self._warned:
                self._warned.add(name)
                log.warning("ratelimit.header_ignored", header=name, value=value[:200], problem=str(exc))
            return None
