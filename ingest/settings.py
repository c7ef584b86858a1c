"""Settings for a run, from four layers: CLI flags > ``INGEST_*`` environment variables > a TOML file > defaults.

Hand-written rather than with pydantic-settings (so no longer a dependency): every error names where the bad
value came from,
``configs/nightly.toml: key 'rate': Input should be greater than 0``, ``INGEST_RATE: …``, ``--rate: …``, and an
unknown key in a file is an error naming the file and key (a typo must not silently fall back to a default).

TOML layout: top-level keys are the fields of ``Settings``; ``[manifest]`` holds the fields of
``ManifestSettings`` with ``[manifest.columns]`` and ``[manifest.defaults]`` tables. Environment variables are
``INGEST_<FIELD>`` (``INGEST_RATE=5``) and ``INGEST_MANIFEST__<FIELD>`` for the manifest table; list and table values
are JSON (``INGEST_KEY_FIELDS='["url","collection_id"]'``).

An ``INGEST_*`` variable that names no setting never stops a run (``unknown_env_variables``): Kubernetes injects
``<SERVICE>_SERVICE_HOST``, ``<SERVICE>_PORT``, ``<SERVICE>_PORT_9090_TCP_ADDR``… for every Service of a namespace,
so a Service named ``ingest`` yields ``INGEST_PORT`` and friends; those are ignored silently, any other unknown one
gets one warning (with the closest setting's variable when there is one). A bad *value* of a known variable is
still an error.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from ingest.errors import ConfigError

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
        description="PEM file of the CAs to trust for the API (default: the system's; SSL_CERT_FILE also works)",
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


def _nested_fields() -> dict[str, type[BaseModel]]:
    return {"manifest": ManifestSettings}


def load_toml(path: Path) -> dict[str, Any]:
    """Read a settings file; a syntax error or an unreadable file is a ``ConfigError`` naming it."""
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def env_layer(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Settings from the ``INGEST_*`` variables that name one, and for each dotted key the variable it came from."""
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name, raw in env.items():
        path = _setting_path(name)
        if path is None:
            continue
        if len(path) == 2:
            values.setdefault(path[0], {})[path[1]] = _env_value(raw)
        else:
            values[path[0]] = _env_value(raw)
        origin[".".join(path)] = name
    return values, origin


# Service variables Kubernetes injects into every pod of a namespace, for each Service (here one named `ingest`):
# INGEST_SERVICE_HOST, INGEST_SERVICE_PORT(_<name>), INGEST_PORT, INGEST_PORT_9090_TCP(_ADDR|_PORT|_PROTO).
_KUBERNETES_SERVICE_VARIABLE = re.compile(r"_SERVICE_HOST$|_SERVICE_PORT|_PORT$|_PORT_\d+_(?:TCP|UDP|SCTP)")


@dataclass(frozen=True, slots=True)
class UnknownVariable:
    """An ``INGEST_*`` variable that names no setting, and the closest setting's variable, if any."""

    name: str
    did_you_mean: str | None


def unknown_env_variables(env: Mapping[str, str]) -> list[UnknownVariable]:
    """The ``INGEST_*`` variables that name no setting and are not Kubernetes service variables (sorted)."""
    unknown = []
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or _setting_path(name) is not None:
            continue
        if _KUBERNETES_SERVICE_VARIABLE.search(name):
            continue
        close = difflib.get_close_matches(name, _known_variables(), n=1, cutoff=0.8)
        unknown.append(UnknownVariable(name, close[0] if close else None))
    return unknown


def _setting_path(name: str) -> list[str] | None:
    """``INGEST_RATE`` → ``["rate"]``, ``INGEST_MANIFEST__FORMAT`` → ``["manifest", "format"]``; ``None`` when the
    variable names no setting."""
    if not name.startswith(ENV_PREFIX):
        return None
    path = name[len(ENV_PREFIX) :].lower().split("__")
    nested = _nested_fields()
    if len(path) == 1 and path[0] in Settings.model_fields and path[0] not in nested:
        return path
    if len(path) == 2 and path[0] in nested and path[1] in nested[path[0]].model_fields:
        return path
    return None


def _known_variables() -> list[str]:
    names = [ENV_PREFIX + name.upper() for name in Settings.model_fields if name not in _nested_fields()]
    for table, model in _nested_fields().items():
        names += [f"{ENV_PREFIX}{table.upper()}__{name.upper()}" for name in model.model_fields]
    return names


def _env_value(raw: str) -> Any:
    stripped = raw.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return raw
    return raw


def merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Merge layers, later ones winning; nested tables merge key by key."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
                merged[key] = merge(merged[key], value)
            else:
                merged[key] = value
    return merged


def build_settings(
    *,
    flags: Mapping[str, Any] | None = None,
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Layer flags > env > file > defaults and validate; errors name the flag, variable or file and key."""
    env = os.environ if env is None else env
    file_values = load_toml(config_file) if config_file is not None else {}
    env_values, env_origin = env_layer(env)
    flag_values = dict(flags or {})
    try:
        return Settings.model_validate(merge(file_values, env_values, flag_values))
    except pydantic.ValidationError as exc:
        raise ConfigError(_explain(exc, flag_values, env_origin, config_file)) from None


def _explain(
    exc: pydantic.ValidationError,
    flags: Mapping[str, Any],
    env_origin: Mapping[str, str],
    config_file: Path | None,
) -> str:
    problems = []
    for error in exc.errors():
        dotted = ".".join(str(part) for part in error["loc"])
        top = str(error["loc"][0]) if error["loc"] else ""
        if top in flags:
            where = f"--{top.replace('_', '-')}"
        elif dotted in env_origin or top in env_origin:
            where = env_origin.get(dotted) or env_origin[top]
        elif config_file is not None:
            where = f"{config_file}: key '{dotted}'"
        else:
            where = f"setting '{dotted}'"
        message = "unknown setting" if error["type"] == "extra_forbidden" else error["msg"]
        problems.append(f"{where}: {message}")
    return "invalid settings:\n  " + "\n  ".join(problems)
