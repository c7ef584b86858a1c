"""IRIs to URIs (RFC 3987 §3.1), so that a manifest may hold ``…/東京.png`` and the API still gets a valid URI.

The spec's ``url`` is ``format: uri`` (RFC 3986): ASCII only. An IRI maps to a URI by writing every non-ASCII
character as the percent-encoded octets of its UTF-8 form (``東`` → ``%E6%9D%B1``); ASCII is left exactly as it is,
so a URL that already is a URI is unchanged (it is the item's identity: the key derives from it). A non-ASCII host
name is written in its IDNA (punycode) form instead, as §3.1 advises for DNS names (``bücher.de`` →
``xn--bcher-kva.de``). What no URI may hold even then (a space, ``<>"{}|\\^```, a second ``#``, ``%zz``) is left for
``ingest.models.check_absolute_http_url`` to reject with a message that shows where.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit


def iri_to_uri(url: str) -> str:
    """``url`` with its non-ASCII characters mapped as RFC 3987 §3.1 says; ASCII input is returned as is."""
    if url.isascii():
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return _encode(url)
    host = parts.hostname or ""
    if not parts.netloc or host.isascii():
        return _encode(url)
    start = url.index(parts.netloc)
    netloc = parts.netloc
    at = netloc.rfind("@") + 1
    port = netloc[at:].rpartition(":")[2] if ":" in netloc[at:] and not netloc.endswith("]") else ""
    raw_host = netloc[at : len(netloc) - (len(port) + 1 if port else 0)]
    try:
        ascii_host = raw_host.encode("idna").decode("ascii")
    except UnicodeError:
        ascii_host = _encode(raw_host)
    rebuilt = netloc[:at] + ascii_host + (":" + port if port else "")
    return _encode(url[:start]) + _encode(rebuilt) + _encode(url[start + len(netloc) :])


def _encode(text: str) -> str:
    """Percent-encode the UTF-8 octets of every non-ASCII character of ``text``."""
    if text.isascii():
        return text
    return "".join(ch if ch.isascii() else quote(ch, safe="") for ch in text)
