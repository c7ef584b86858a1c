"""Where the API key may travel: https, or plain http to loopback, unless explicitly allowed; never in the URL;
and through which proxy.

Proxies are chosen as curl chooses them: ``https_proxy`` (or ``HTTPS_PROXY``) for an https API, ``http_proxy``
for plain http, else ``all_proxy``; ``no_proxy`` (``NO_PROXY``) lists hosts and domain suffixes that go direct
(``*`` for all). Loopback is always direct. An https API is reached through an http proxy by a ``CONNECT``
tunnel, so the proxy sees only the host and port, never the key; plain http through a proxy would hand it the key
in clear, which is allowed only with ``--allow-insecure-http``. A proxy URL's credentials are never logged.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from ingest.errors import UsageError


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_transport(base_url: str, *, allow_insecure_http: bool) -> None:
    """Refuse a base URL that is not http(s) with a host, that carries credentials, or plain http to a
    non-loopback host (the key would travel in clear) unless ``allow_insecure_http``."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
        shown = f"{parts.scheme}://***@{parts.netloc.rpartition('@')[2]}" if "@" in parts.netloc else repr(base_url)
        if "@" in parts.netloc:
            raise UsageError(
                f"--base-url must not carry credentials ({shown}): the API key comes from FAL_KEY or --key-file"
            )
        raise UsageError(f"--base-url must be an http(s) URL with a host, got {shown}")
    try:
        host = parts.hostname
        parts.port  # noqa: B018 -- raises on a bad port
    except ValueError as exc:
        raise UsageError(f"--base-url {base_url!r}: {exc}") from None
    if not host:
        raise UsageError(f"--base-url must be an http(s) URL with a host, got {base_url!r}")
    if parts.scheme == "https" or allow_insecure_http:
        return
    if not is_loopback(host):
        raise UsageError(f"refusing to send the API key over plain http to {host}; use https, or --allow-insecure-http")


def proxy_for(base_url: str, *, env: Mapping[str, str] | None = None) -> str | None:
    """The proxy URL requests to ``base_url`` go through, from the environment (see the module docstring).

    Plain http reaches a proxy only for a non-loopback API, which ``check_transport`` allows only with
    ``--allow-insecure-http``: the key is in clear there by the user's choice."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if is_loopback(host):
        return None
    proxies = _environment_proxies(os.environ if env is None else env)
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or _bypassed(host, parts.port, proxies.get("no", "")):
        return None
    if "://" not in proxy:
        proxy = "http://" + proxy  # as curl does
    scheme = urlsplit(proxy).scheme
    if scheme not in ("http", "https"):
        raise UsageError(f"{parts.scheme}_proxy: only http:// and https:// proxies are supported, got {scheme}://")
    return proxy


def shown_proxy(proxy: str | None) -> str | None:
    """A proxy URL fit for a log line: its credentials masked."""
    if proxy is None or "@" not in proxy:
        return proxy
    scheme, _, rest = proxy.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


def _environment_proxies(env: Mapping[str, str]) -> dict[str, str]:
    """``{scheme: proxy}`` from ``*_proxy`` variables, lower case winning over upper case (as curl and urllib)."""
    found: dict[str, str] = {}
    for name, value in env.items():
        lowered = name.lower()
        if value and lowered.endswith("_proxy") and (name == lowered or lowered not in env):
            found[lowered.removesuffix("_proxy")] = value.strip()
    return found


def _bypassed(host: str, port: int | None, no_proxy: str) -> bool:
    """Whether ``no_proxy`` sends ``host`` direct: ``*``, the host itself, or a domain it is under."""
    host = host.lower().rstrip(".")
    for entry in (item.strip().lower() for item in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if entry_port and port is not None and entry_port != str(port):
            continue
        name = name.lstrip(".").rstrip(".")
        if host == name or host.endswith("." + name):
            return True
    return False
