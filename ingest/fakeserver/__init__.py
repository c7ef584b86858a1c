"""A fake of fal's Assets API (``POST /v1/assets/uploads``): spec-faithful, idempotent, with seeded faults.

It serves the test-suite, ``ingest demo``, ``ingest fake-server`` and the chaos tests::

    async with running_fake_server(FakeServerConfig(faults=load_profile("flaky"))) as server:
        ...  # upload to server.url with "Authorization: Key fake-key"
        assert server.ledger.stats()["duplicate_bodies"] == 0

Modules: ``config`` (settings and fault profiles), ``app`` (the request steps), ``responses`` (error and JSON
answers, reading a request body), ``idempotency`` (the key
store), ``faults`` (seeded fault decisions), ``ratelimit`` (token bucket and 429 hints), ``assets`` (the 201
body), ``ledger`` (what happened), ``server`` (running it), ``storage`` and ``blobs`` (fal's storage API at the root:
tokens, single and multipart uploads, files served back).
"""

from ingest.fakeserver.app import create_app
from ingest.fakeserver.config import (
    FakeServerConfig,
    FaultConfig,
    RateLimitHint,
    StorageConfig,
    available_profiles,
    load_profile,
)
from ingest.fakeserver.ledger import Ledger
from ingest.fakeserver.server import FakeServer, running_fake_server, serve_forever

__all__ = [
    "FakeServer",
    "FakeServerConfig",
    "FaultConfig",
    "Ledger",
    "RateLimitHint",
    "StorageConfig",
    "available_profiles",
    "create_app",
    "load_profile",
    "running_fake_server",
    "serve_forever",
]
