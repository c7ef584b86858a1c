"""A run's connection settings, free of the HTTP client: the CLI and the run's config hold them without importing
aiohttp (a command that sends nothing never pays for it)."""

from __future__ import annotations

from dataclasses import dataclass

from ingest.settings import default


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """Connection settings for one run."""

    base_url: str
    concurrency: int
    connect_timeout: float = default("connect_timeout")
    request_timeout: float = default("request_timeout")
    max_response_bytes: int = default("max_response_bytes")
    max_server_wait: float = default("max_server_wait")
    ca_bundle: str | None = None  # PEM file of CAs to trust instead of the system's (SSL_CERT_FILE also works)
    proxy: str | None = None  # the proxy for base_url, from HTTPS_PROXY/NO_PROXY (``ingest.upload.transport``)
