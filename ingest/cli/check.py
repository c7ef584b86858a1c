"""``ingest check``: the run's preflight on its own — is the endpoint there, and is the key accepted?"""

from __future__ import annotations

import argparse
import sys

import anyio

from ingest.cli.run import event_loop_options, load_settings
from ingest.credentials import ApiKey, resolve_api_key
from ingest.logs import configure_logging
from ingest.settings import Settings
from ingest.upload.options import ClientOptions
from ingest.upload.transport import check_transport

# The settings ``ingest check`` takes: where the API is, how to reach it, and the key.
CHECK_SETTINGS = (
    "base_url",
    "key_file",
    "connect_timeout",
    "request_timeout",
    "allow_insecure_http",
    "log_format",
    "log_level",
)


def cmd_check(args: argparse.Namespace) -> int:
    """Send the preflight probe; exit 0 when the endpoint and key are right, else the run's exit code (3 or 4)."""
    settings = load_settings(args)
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    check_transport(settings.base_url, allow_insecure_http=settings.allow_insecure_http)
    api_key = resolve_api_key(key_file=settings.key_file)
    configure_logging(fmt=settings.log_format, level=settings.log_level, secrets=[api_key.reveal()])
    status = anyio.run(_probe, settings, api_key, backend_options=event_loop_options(settings.event_loop))
    url = settings.base_url.rstrip("/")
    print(
        f"ingest: ok — {url}/assets/uploads answered HTTP {status} to an empty body: the endpoint is there and the "
        "key is accepted",
        file=sys.stderr,
    )
    return 0


async def _probe(settings: Settings, api_key: ApiKey) -> int | None:
    from ingest.upload.client import AssetsClient, open_session  # on use: the parser imports this module
    from ingest.upload.preflight import preflight

    options = ClientOptions(
        base_url=settings.base_url,
        concurrency=1,
        connect_timeout=settings.connect_timeout,
        request_timeout=settings.request_timeout,
        max_response_bytes=settings.max_response_bytes,
    )
    async with open_session(options) as session:
        answer = await preflight(AssetsClient(session, api_key, options))
    return answer.status
