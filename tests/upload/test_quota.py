"""The server's announced quota (``RateLimit-Policy`` / ``RateLimit`` and the older trio) read into a ``Quota``."""

from __future__ import annotations

import pytest
import structlog

from ingest.upload.quota import Quota, QuotaReader


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"RateLimit-Policy": '"default";q=100;w=1', "RateLimit": '"default";r=42;t=3'}, Quota(100.0, None)),
        ({"RateLimit-Policy": '"default";q=100;w=1', "RateLimit": '"default";r=0;t=3'}, Quota(100.0, 3.0)),
        ({"RateLimit-Policy": '"default";q=600;w=60'}, Quota(10.0, None)),
        ({"RateLimit-Policy": "default;q=50"}, Quota(50.0, None)),  # a token name, no w: read as w=1
        ({"RateLimit-Policy": '"burst";q=100;w=10, "day";q=5000;w=86400'}, Quota(10.0, None)),  # a day is a quota
        ({"RateLimit-Policy": '"day";q=5000;w=86400'}, None),  # only a long-window quota: no ceiling
        ({"RateLimit-Policy": '"a";q=10;w=1;qu="requests"'}, Quota(10.0, None)),  # a string parameter is skipped
        ({"RateLimit": '"a";r=5;t=1, "b";r=0;t=7'}, Quota(None, 7.0)),  # the spent member says how long
        ({"RateLimit": '"a";r=0'}, Quota(None, 0.0)),
        ({"RateLimit-Limit": "100", "RateLimit-Remaining": "0", "RateLimit-Reset": "2"}, Quota(100.0, 2.0)),
        ({"RateLimit-Limit": "100, 100;w=10", "RateLimit-Remaining": "7", "RateLimit-Reset": "2"}, Quota(10.0, None)),
        ({"ratelimit-policy": '"default";q=20;w=2'}, None),  # a plain dict is case-sensitive; aiohttp's is not
        ({}, None),
    ],
)
def test_quota_headers(headers: dict[str, str], expected: Quota | None) -> None:
    """Each header form reads into the ceiling (lowest q / w of the rate policies) and the spent quota's wait."""
    assert QuotaReader().read(headers) == expected


@pytest.mark.parametrize(
    "headers",
    [
        {"RateLimit-Policy": "garbage;;"},
        {"RateLimit-Policy": '"default";q=0;w=1'},
        {"RateLimit-Policy": '"default";q=-5'},
        {"RateLimit-Policy": '"default";w=1'},
        {"RateLimit-Policy": '"unterminated;q=1'},
        {"RateLimit": '"default";r=0;t=soon'},
        {"RateLimit": '"default";t=3'},
        {"RateLimit-Limit": "lots", "RateLimit-Remaining": "-1"},
    ],
)
def test_malformed_headers_are_ignored(headers: dict[str, str]) -> None:
    """A header that does not parse says nothing: no quota, and one warning naming it."""
    with structlog.testing.capture_logs() as logs:
        assert QuotaReader().read(headers) is None
    assert logs and all(entry["event"] == "ratelimit.header_ignored" for entry in logs)


def test_a_malformed_header_is_logged_once_per_reader() -> None:
    """The same bad header on every answer of a run is logged the first time only."""
    reader = QuotaReader()
    with structlog.testing.capture_logs() as logs:
        for _ in range(5):
            reader.read({"RateLimit-Policy": "x;q=abc", "RateLimit": '"x";r=0;t=2'})
    assert [entry["header"] for entry in logs] == ["RateLimit-Policy"]
    assert reader.read({"RateLimit-Policy": "x;q=abc", "RateLimit": '"x";r=0;t=2'}) == Quota(None, 2.0)
