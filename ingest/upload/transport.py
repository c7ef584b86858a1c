"""Where the API key may travel: https, or plain http to loopback, unless explicitly allowed."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from ingest.errors import UsageError


def check_transport(base_url: str, *, allow_insecure_http: bool) -> None:
    """Refuse a base URL that is not http(s) with a host, or plain http to a non-loopback host (the key would
    travel in clear) unless ``allow_insecure_http``."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--base-url must be an http(s) URL with a host, got {base_url!r}")
    if parts.scheme == "https" or allow_insecure_http:
        return
    host = parts.hostname
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise UsageError(f"refusing to send the API key over plain http to {host}; use https, or --allow-insecure-http")
