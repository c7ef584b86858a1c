"""The settings themselves: ``Settings`` (every field's default, bound and help text; the CLI flags are built from
them) and ``ManifestSettings``, the ``[manifest]`` table. ``ingest.settings.layers`` fills them in."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ENV_PREFIX = "INGEST_"
DEFAULT_BASE_URL = "https://api.fal.ai/v1"


class ManifestSettings(BaseModel):
    """How manifests are read."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["csv", "tsv", "jsonl", "json", "urls"] | None = Field(
        default=None, description="manifest format (default: from the extension; .txt and stdin by content)"
    )
    encoding: str | None = Field(
        default=None,
        description="text encoding (default: BOM, else UTF-8, else detected)",
        json_schema_extra={"metavar": "NAME"},
    )
    delimiter: str | None = Field(
        default=None,
        description="delimiter of delimited text, e.g. ';' or tab (default: sniffed from the header)",
        json_schema_extra={"metavar": "CHAR"},
    )
    fal_outputs: bool = Field(default=True, description="read fal model outputs (images[*].url, video.url…) as items")
    strict_columns: bool = Field(
        default=False, description="unknown columns are errors instead of one warning per manifest"
    )
    max_line_bytes: int = Field(default=1 << 20, gt=0, description="a longer physical line makes its row invalid")
    columns: dict[str, str] = Field(default_factory=dict, description="field -> column name, e.g. url = 'media_url'")
    defaults: dict[str, Any] = Field(default_factory=dict, description="values for fields a row leaves empty")
    infer_type: bool = Field(default=True, description="infer `type` from the URL's extension when the row has none")


class Settings(BaseModel):
    """Every setting of ``ingest run``; the README's configuration reference mirrors this class."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # `--rate inf` is a usage error, not a crash

    base_url: str = Field(
        json_schema_extra={"metavar": "URL"},
        default=DEFAULT_BASE_URL,
        description="the API root; the tool appends /assets/uploads",
    )
    results: Path | None = Field(
        default=None, description="results file (default: <first manifest>.results.jsonl beside it)"
    )
    key_file: Path | None = Field(default=None, description="read the API key from this file when FAL_KEY* are not set")
    concurrency: int = Field(default=16, ge=1, le=4096, description="requests in flight at once")
    rate: float = Field(
        default=10.0, ge=0.01, le=1_000_000, description="requests per second, every attempt included (0.01 to 1e6)"
    )
    burst: float | None = Field(default=None, ge=1, description="limiter bucket size (default: 2% of rate, at least 1)")
    max_attempts: int = Field(default=8, ge=1, description="attempts per item, first included")
    max_retry_time: float = Field(default=600.0, gt=0, description="seconds per item from first attempt to giving up")
    conflict_margin: float = Field(
        default=10.0,
        ge=0,
        description="a 409 (same key still in flight) is retried for request_timeout plus this many seconds",
    )
    backoff_initial: float = Field(default=0.5, gt=0, description="first backoff window, seconds")
    backoff_max: float = Field(default=30.0, gt=0, description="largest backoff window, seconds")
    max_server_wait: float = Field(default=300.0, gt=0, description="clamp on a server's Retry-After / reset hint")
    max_outage: float = Field(
        default=300.0,
        gt=0,
        description="seconds the run waits for a vanished or unreachable service before stopping (exit 4)",
    )
    strict: bool = Field(
        default=False, description="refuse a results file made for other manifests or key settings (default: warn)"
    )
    summary_json: str | None = Field(
        json_schema_extra={"metavar": "PATH"},
        default=None,
        description="write the final summary as one JSON document to PATH ('-': stdout)",
    )
    preflight: bool = Field(
        default=True, description="probe the endpoint with an empty body before the first item (--no-preflight)"
    )
    connect_timeout: float = Field(default=10.0, gt=0, description="seconds to open a connection")
    request_timeout: float = Field(default=60.0, gt=0, description="seconds for a whole request and response")
    max_response_bytes: int = Field(default=1 << 20, gt=0, description="a larger response body is an error")
    key_fields: list[str] = Field(
        default_factory=lambda: ["url"], description="the identity behind the idempotency key"
    )
    key_namespace: str | None = Field(
        json_schema_extra={"metavar": "NAME"},
        default=None,
        description="derive keys in another namespace to deliberately re-ingest",
    )
    retry_failed: bool = Field(default=False, description="also retry items that failed permanently in an earlier run")
    grace_period: float = Field(
        default=8.0,
        ge=0,
        description="seconds from SIGINT/SIGTERM to exit, in-flight requests and the final flush included",
    )
    fsync_interval: float = Field(default=1.0, gt=0, description="most seconds a written record waits for fsync")
    max_failures: int | None = Field(default=None, ge=1, description="abort (exit 3) after this many failed items")
    failure_ratio: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="abort (exit 3) above this share of failed items, once failure_min_items finished",
    )
    failure_min_items: int = Field(default=1000, ge=1, description="finished items before failure_ratio applies")
    ca_bundle: Path | None = Field(
        default=None,
        description="PEM file of the CAs to trust for the API, fal storage and https manifests (default: the "
        "system's; SSL_CERT_FILE also works)",
    )
    allow_insecure_http: bool = Field(default=False, description="send the key over plain http to a non-loopback host")
    require_fal_host: bool = Field(
        default=False, description="reject media URLs outside fal's hosts (default: warn once)"
    )
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: console on a terminal, JSON otherwise"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="least severe log level shown"
    )
    progress: Literal["auto", "bar", "log", "off"] = Field(
        default="auto", description="auto: a live bar on a terminal, log events otherwise"
    )
    progress_interval: float = Field(default=10.0, gt=0, description="seconds between progress log events")
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(default="auto", description="auto: uvloop when installed")
    shard: str | None = Field(
        json_schema_extra={"metavar": "K/N"},
        default=None,
        description="'K/N': this process's share of the items; '/N' takes K from JOB_COMPLETION_INDEX",
    )
    max_duration: float | None = Field(default=None, gt=0, description="stop taking new items after this many seconds")
    metrics_port: int | None = Field(default=None, ge=0, le=65535, description="serve Prometheus /metrics on this port")
    metrics_host: str = Field(
        json_schema_extra={"metavar": "ADDR"},
        default="127.0.0.1",
        description="address for the metrics endpoint (0.0.0.0 in a pod)",
    )
    metrics_textfile: Path | None = Field(
        default=None, description="write metrics for node-exporter's textfile collector"
    )
    rehost: Literal["auto", "never", "always"] = Field(
        default="auto",
        description="upload media that is not on fal (paths, file://, s3://, gs://, az://, other hosts) into fal "
        "storage first; always: fal URLs too; never: register urls as they are",
    )
    storage_url: str = Field(
        json_schema_extra={"metavar": "URL"},
        default="https://rest.fal.ai",
        description="fal's storage API (token endpoint); bytes go to the base_url its token names",
    )
    upload_concurrency: int = Field(
        default=4, ge=1, le=256, description="storage requests (uploads, parts) in flight at once, for the whole run"
    )
    bwlimit: str | None = Field(
        json_schema_extra={"metavar": "BYTES"},
        default=None,
        description="upload bandwidth for the whole run, bytes/s with K/M/G suffixes (shared by shards)",
    )
    dedupe_content: bool = Field(
        default=False, description="local files with the same bytes under two names are uploaded once"
    )
    multipart_max_age: float = Field(
        default=6 * 3600.0, gt=0, description="seconds an interrupted multipart upload may be resumed"
    )
    manifest: ManifestSettings = Field(default_factory=ManifestSettings, description="how manifests are read")


def default(name: str) -> Any:
    """The default of setting ``name``: the one place a default is written (``RunConfig``, ``ClientOptions`` and
    ``RetryPolicy`` take theirs from here)."""
    return Settings.model_fields[name].get_default(call_default_factory=True)
