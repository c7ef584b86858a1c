"""What the fake server does: its API key, its fault profile, and how profiles are found.

A fault profile is a TOML file whose top-level keys are the fields of ``FaultConfig``. Profiles ship twice,
as identical copies: in the package (``ingest/data/faults/NAME.toml``, so an installed ``ingest`` has them)
and in the repository (``configs/faults/NAME.toml``, where people look for them). ``load_profile`` takes a
profile name or a path to a ``.toml`` file.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

RateLimitHint = Literal[
    "retry-after-seconds",  # Retry-After: <delta-seconds>
    "retry-after-date",  # Retry-After: <IMF-fixdate>, to be compared with the Date header
    "ratelimit",  # IETF draft: RateLimit-Policy + RateLimit with t=<seconds>
    "ratelimit-reset",  # older draft: RateLimit-Limit / -Remaining / -Reset
    "x-ratelimit-reset",  # vendor style: x-ratelimit-reset: <seconds>
    "none",  # a bare 429: the client falls back to its own backoff
]

QuotaHeaders = Literal[
    "none",  # answers say nothing of the bucket (only a 429 carries its hint)
    "ratelimit",  # every answer: RateLimit-Policy: "default";q=<rate>;w=1 and RateLimit: "default";r=<left>;t=<s>
    "ratelimit-reset",  # every answer: RateLimit-Limit / -Remaining / -Reset (the older draft)
]

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Seconds = Annotated[float, Field(ge=0.0)]

# A checkout keeps the profiles at <repo>/configs/faults; this file is <repo>/ingest/fakeserver/config.py.
REPO_PROFILES_DIR = Path(__file__).resolve().parents[2] / "configs" / "faults"


class FaultConfig(BaseModel):
    """Which faults the fake server injects, and how often; every probability defaults to 0 (no faults).

    Faults are drawn from one ``random.Random(seed)``, so a single-connection run is reproducible.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    p_429: Probability = 0.0
    retry_after_s: Seconds = 1.0
    rate_limit_hint: RateLimitHint = "retry-after-seconds"
    p_5xx: Probability = 0.0
    p_latency: Probability = 0.0
    latency_min_s: Seconds = 0.0
    latency_max_s: Seconds = 0.0
    p_commit_then_fail: Probability = 0.0
    p_slow: Probability = 0.0
    slow_s: Seconds = 30.0
    bucket_rate: Annotated[float, Field(gt=0.0)] | None = None
    bucket_burst: Annotated[int, Field(ge=1)] = 1
    # With a bucket: every answer of the uploads endpoint announces its policy and what is left of it (a 201 too).
    quota_headers: QuotaHeaders = "none"
    revoke_after: Annotated[int, Field(ge=0)] | None = None
    base_latency_s: Seconds = 0.0

    @model_validator(mode="after")
    def _latency_range_is_ordered(self) -> Self:
        if self.latency_max_s < self.latency_min_s:
            raise ValueError("latency_max_s must be >= latency_min_s")
        return self


class StorageConfig(BaseModel):
    """The fake of fal's storage API (served at the root, beside ``/v1``): token lifetime, where bytes go, faults.

    Faults are drawn from their own ``random.Random(seed)`` so that enabling one leaves the Assets API's sequence
    alone. Every storage request but ``GET`` of a file may meet the gateway faults (429, 503, an ingress 502 with an
    HTML body, as nginx answers); a part may also be cut off mid-body or answered without an ``ETag``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    token_ttl_s: Annotated[float, Field(gt=0.0)] = 3600.0  # how long an issued token is accepted
    spill_dir: Path | None = None  # where stored bytes go (default: a temporary directory, removed at shutdown)
    seed: int = 0
    p_429: Probability = 0.0
    p_503: Probability = 0.0
    p_502_ingress: Probability = 0.0
    p_drop_part: Probability = 0.0  # close the connection halfway through a part's body
    p_missing_etag: Probability = 0.0  # answer a part 200 without an ETag header
    retry_after_s: Seconds = 0.0  # the Retry-After of a storage 429 / 503


class FakeServerConfig(BaseModel):
    """The whole fake server: the one API key it accepts, its faults, and how long it remembers keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key: Annotated[str, Field(min_length=1)] = "fake-key"
    faults: FaultConfig = Field(default_factory=FaultConfig)
    idempotency_ttl_s: Annotated[float, Field(gt=0.0)] | None = None  # None: keys are never forgotten
    storage: StorageConfig = Field(default_factory=StorageConfig)
    # The Assets API rejects (422) a url that its storage did not issue and that is not on a fal host.
    strict_urls: bool = False


def load_profile(name_or_path: str) -> FaultConfig:
    """The ``FaultConfig`` of a named profile (``"flaky"``) or of a ``.toml`` file; else ``ValueError``."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or len(path.parts) > 1:
        if not path.is_file():
            raise ValueError(f"fault profile file not found: {path}")
        return _parse_profile(path.read_bytes(), source=str(path))
    profiles = _profile_files()
    if name_or_path not in profiles:
        known = ", ".join(sorted(profiles))
        raise ValueError(f"unknown fault profile {name_or_path!r}; known: {known} (or a path to a .toml)")
    return _parse_profile(profiles[name_or_path].read_bytes(), source=str(profiles[name_or_path]))


def available_profiles() -> list[str]:
    """The names ``load_profile`` accepts, sorted."""
    return sorted(_profile_files())


def packaged_profiles_dir() -> Traversable:
    """The profiles shipped inside the package (``ingest/data/faults``)."""
    return resources.files("ingest") / "data" / "faults"


def _profile_files() -> dict[str, Traversable]:
    # The checkout's copy wins over the packaged one so that a profile being edited is the one used;
    # a test keeps the two copies identical.
    found: dict[str, Traversable] = {}
    for directory in (packaged_profiles_dir(), REPO_PROFILES_DIR):
        if directory.is_dir():
            found.update({f.name.removesuffix(".toml"): f for f in directory.iterdir() if _is_toml(f)})
    return found


def _is_toml(entry: Traversable) -> bool:
    return entry.name.endswith(".toml") and entry.is_file()


def _parse_profile(raw: bytes, *, source: str) -> FaultConfig:
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{source}: not valid TOML ({exc})") from None
    try:
        return FaultConfig.model_validate(data)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise ValueError(f"{source}: {exc}") from None
