"""Is the service usable at all? One request that cannot create anything answers it, before the first item.

The probe is an empty JSON body to the upload endpoint (``AssetsClient.probe``): the API validates it and answers
400/422 when the endpoint and the key are right. Every other answer says what is wrong with the *run*, not with any
item, so it stops the run before anything is sent or recorded:

| probe answer | verdict | exit |
| --- | --- | --- |
| 400, 422 | usable: go on | — |
| 429, 5xx, other 4xx | the endpoint exists; go on (the run's own retries and outage handling take over) | — |
| 404, 405 | no upload endpoint at the URL: the base URL is probably not the API root | 4 |
| 3xx | the URL redirects; the key must not follow a redirect | 4 |
| 401, 403 | the key is rejected | 3 |
| TLS failure | certificate or handshake failed | 3 |
| connection refused, DNS, timeout (after ``PREFLIGHT_RETRIES`` more tries) | unreachable | 4 |

``judge`` is the pure table; ``preflight`` runs it, with a few quick retries for an unreachable server (a pod whose
network is still coming up).
"""

from __future__ import annotations

import time

import anyio
import structlog

from ingest.errors import AuthRejected, IngestError, ServiceUnavailable, TlsFailure
from ingest.settings import DEFAULT_BASE_URL
from ingest.upload.client import AssetsClient, AttemptResult
from ingest.upload.limiter import RateLimiter

PREFLIGHT_RETRIES = (1.0, 2.0)  # seconds before each further try while the server cannot be reached
USABLE = frozenset({400, 422})

log = structlog.get_logger("ingest.preflight")


def judge(answer: AttemptResult, url: str) -> IngestError | None:
    """Why the service at ``url`` cannot be used, from the probe's ``answer``; ``None`` when it can."""
    status, error = answer.status, answer.error
    detail = f"{error.message}" if error else f"HTTP {status}"
    if status is None:
        if error is not None and error.type == "tls_error":
            return TlsFailure(
                f"TLS failure talking to {url}: {detail} — if the server is right, trust its CA with --ca-bundle PATH "
                "(or SSL_CERT_FILE)"
            )
        return ServiceUnavailable(f"cannot reach {url}: {detail}")
    if status in (404, 405):
        return ServiceUnavailable(
            f"no upload endpoint at {url} (HTTP {status}) — the base URL is the API root, e.g. {DEFAULT_BASE_URL}"
        )
    if 300 <= status < 400:
        return ServiceUnavailable(f"{url} answers with a redirect (HTTP {status}: {detail}); give the final URL")
    if status in (401, 403):
        return AuthRejected(
            status,
            error.type if error else "authorization_error",
            f"the API key was rejected by {url}: {detail} — check FAL_KEY",
            answer.request_id,
        )
    return None


async def preflight(client: AssetsClient, limiter: RateLimiter | None = None) -> AttemptResult:
    """Probe ``client``'s endpoint; raise the ``judge``'s error if the service cannot be used, else return the
    answer. An unreachable server gets ``len(PREFLIGHT_RETRIES)`` more tries. A quota the answer announces
    (``RateLimit-Policy``) is given to ``limiter``, so that it paces the run's very first requests."""
    delays = list(PREFLIGHT_RETRIES)
    while True:
        answer = await client.probe()
        problem = judge(answer, client.url)
        unreachable = answer.status is None and isinstance(problem, ServiceUnavailable)
        if unreachable and delays:
            await anyio.sleep(delays.pop(0))
            continue
        if problem is not None:
            # A rejected key is the same event whether the probe or an item found it.
            event = "auth.rejected" if isinstance(problem, AuthRejected) else "preflight.failed"
            log.error(event, url=client.url, status=answer.status, problem=str(problem), during="preflight")
            raise problem
        if answer.status not in USABLE:
            log.warning("preflight.degraded", url=client.url, status=answer.status, request_id=answer.request_id)
        else:
            log.info("preflight.ok", url=client.url, status=answer.status)
        if limiter is not None and answer.quota is not None:
            limiter.advise(answer.quota, sent_at=time.monotonic(), throttled=False)
        return answer
