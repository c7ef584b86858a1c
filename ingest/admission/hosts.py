"""A URL's host as a browser sees it (the WHATWG URL standard), for the fal-host check.

``urlsplit`` and a browser disagree on hostile URLs: in ``https://evil.com\\@v3.fal.media/x.png`` a browser reads
``\\`` as ``/`` (special schemes), so the host is ``evil.com`` and ``\\@v3.fal.media/x.png`` is the path, while
``urlsplit`` returns ``v3.fal.media``. ``whatwg_host`` follows the standard's steps that decide the host: strip
leading/trailing C0 controls and spaces, drop tabs and newlines, skip any run of ``/`` and ``\\`` after
``scheme:``, end the authority at the first ``/``, ``\\``, ``?`` or ``#``, take the host after the *last* ``@``,
cut the port, percent-decode, and map the name through IDNA (UTS #46, so full-width dots and capitals fold as a
browser folds them). A trailing dot names the same DNS host and is dropped for the comparison.
https://url.spec.whatwg.org/#concept-basic-url-parser
"""

from __future__ import annotations

import re
from urllib.parse import unquote

import idna

FAL_HOST_SUFFIXES = ("fal.media", "fal.ai", "fal.run")
_FAL_SUBDOMAINS = tuple("." + suffix for suffix in FAL_HOST_SUFFIXES)

# Plain printable ASCII with at most one '@' and no backslash, percent, tab or newline: the regex reads the same
# host as the full parser (this runs once per row).
_SIMPLE = re.compile(r"[hH][tT][tT][pP][sS]?://(?:[^/?#@\\%\s]*@)?([^/?#:@\[\]\\%\s]+)(?:[:/?#]|$)")
_TRIM = "".join(map(chr, range(0x21)))  # C0 controls and space, stripped from both ends


def whatwg_host(url: str) -> str | None:
    """The host a WHATWG URL parser finds in ``url`` (ASCII, lower case, no trailing dot), or ``None`` when there
    is none or it is not a valid host."""
    if url.isascii() and url.count("@") <= 1 and (match := _SIMPLE.match(url)) is not None:
        return match.group(1).lower().rstrip(".") or None
    return _parse_host(url)


def _parse_host(url: str) -> str | None:
    text = url.strip(_TRIM).replace("\t", "").replace("\n", "").replace("\r", "")
    scheme, colon, rest = text.partition(":")
    if not colon or scheme.lower() not in ("http", "https", "ws", "wss", "ftp"):
        return None
    rest = rest.lstrip("/\\")
    authority = re.split(r"[/\\?#]", rest, maxsplit=1)[0]
    host = authority.rpartition("@")[2]
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1].lower() if end > 0 else None
    host = host.partition(":")[0]
    host = unquote(host)
    if not host:
        return None
    try:
        ascii_host = idna.encode(host.rstrip("."), uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        return None
    return ascii_host.lower() or None


def is_fal_host(url: str) -> bool:
    """Whether ``url`` points at fal-hosted media, as a browser would read its host."""
    host = whatwg_host(url)
    return host is not None and (host.endswith(_FAL_SUBDOMAINS) or host in FAL_HOST_SUFFIXES)
