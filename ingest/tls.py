"""The certificates a TLS connection trusts, for every https connection of a run (the API, fal storage, a manifest
at an https URL): the system's store (honouring ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``), or, given ``--ca-bundle``,
only the CAs of that PEM file."""

from __future__ import annotations

import functools
import ssl


@functools.cache  # one context per bundle for the process: loading the system's store costs ~90 ms
def trust(ca_bundle: str | None = None) -> ssl.SSLContext:
    """A verifying client context trusting ``ca_bundle`` (a PEM file of CAs) or, without one, the system's store.
    ``OSError`` / ``ssl.SSLError`` when the bundle cannot be read."""
    return ssl.create_default_context(cafile=ca_bundle)
