"""``ingest run``: settings → ``RunConfig`` → the pipeline (or a dry run, or N worker processes)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import structlog

from ingest.admission.keys import KeyDeriver
from ingest.admission.shard import Shard, parse_shard
from ingest.cli.flags import flag_layer
from ingest.cli.output import print_summary, write_summary_json
from ingest.credentials import resolve_api_key
from ingest.errors import UsageError
from ingest.logs import configure_logging, json_logs
from ingest.manifest.remote import is_remote
from ingest.manifest.source import ManifestOptions, ManifestSource, preflight
from ingest.rehost.bandwidth import parse_size
from ingest.rehost.options import RehostConfig, RehostOptions
from ingest.results.naming import default_results_path, expand_shard_placeholder
from ingest.results.paths import Named, check_outputs_are_not_inputs
from ingest.run.pipeline import RunConfig, RunReport, run_pipeline
from ingest.settings import Settings, build_settings, unknown_env_variables
from ingest.tls import trust
from ingest.upload.options import ClientOptions
from ingest.upload.retry import RetryPolicy
from ingest.upload.transport import check_transport, proxy_for


def load_settings(args: argparse.Namespace) -> Settings:
    """Flags > env > ``--config`` file > defaults."""
    return build_settings(flags=flag_layer(args), config_file=getattr(args, "config", None))


def warn_unknown_env() -> None:
    """One ``settings.unknown_variable`` warning per ``INGEST_*`` variable that names no setting (it is ignored)."""
    log = structlog.get_logger("ingest.settings")
    for variable in unknown_env_variables(os.environ):
        log.warning(
            "settings.unknown_variable",
            variable=variable.name,
            did_you_mean=variable.did_you_mean,
            action="ignored",
        )


def cmd_run(args: argparse.Namespace) -> int:
    """``ingest run``."""
    settings = load_settings(args)
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    warn_unknown_env()
    check_transport(settings.base_url, allow_insecure_http=settings.allow_insecure_http)
    if settings.rehost != "never":
        check_transport(settings.storage_url, allow_insecure_http=settings.allow_insecure_http)
    sources = open_sources(args.manifests, settings)
    config = run_config(settings, sources, limit=args.limit, handle_signals=True)
    config = dataclasses.replace(config, family_lock_held=args.family_lock_held)
    check_outputs_are_not_inputs(
        config.results_path,
        inputs=run_inputs(args, settings),
        processes=args.processes,
        metrics_textfile=config.metrics_textfile,
    )
    if args.dry_run:
        from ingest.commands.validate import dry_run

        return dry_run(config, estimate_rate=settings.rate)
    if args.processes > 1:
        if config.shard is not None:
            raise UsageError("--processes and --shard do not combine: shard across machines, or processes on one")
        from ingest.results.lock import ResultsLock
        from ingest.run.processes import run_processes

        with ResultsLock(config.results_path):  # the family, for all children: a plain run beside them is refused
            return run_processes(args.argv, count=args.processes, results=config.results_path)
    api_key = resolve_api_key(key_file=settings.key_file)
    configure_logging(fmt=settings.log_format, level=settings.log_level, secrets=[api_key.reveal()])
    report: RunReport = anyio.run(
        run_pipeline, config, api_key, backend_options=event_loop_options(settings.event_loop)
    )
    if settings.summary_json is not None:
        write_summary_json(report.summary, settings.summary_json)
    print_summary(report, as_event=json_logs(settings.log_format))
    return report.exit_code


def run_inputs(args: argparse.Namespace, settings: Settings) -> list[Named]:
    """The files a run reads: none of them may be one it writes."""
    inputs = [Named("manifest", Path(path)) for path in args.manifests if path != "-" and not is_remote(path)]
    if getattr(args, "config", None) is not None:
        inputs.append(Named("--config", args.config))
    for what, path in (("--key-file", settings.key_file), ("--ca-bundle", settings.ca_bundle)):
        if path is not None:
            inputs.append(Named(what, path.expanduser()))
    return inputs


_DELIMITER_WORDS = {"\\t": "\t", "tab": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}  # what a shell can type


def manifest_options(settings: Settings) -> ManifestOptions:
    """The reader options from settings."""
    m = settings.manifest
    return ManifestOptions(
        strict_columns=m.strict_columns,
        max_line_bytes=m.max_line_bytes,
        columns=m.columns,
        defaults=m.defaults,
        infer_type=m.infer_type,
        encoding=m.encoding,
        delimiter=_DELIMITER_WORDS.get(m.delimiter.lower(), m.delimiter) if m.delimiter else None,
        fal_outputs=m.fal_outputs,
        allow_sources=settings.rehost != "never",
    )


def open_sources(paths: Sequence[str], settings: Settings) -> list[ManifestSource]:
    """Open and preflight every manifest before anything is sent (a bad file is exit 2, not a half run)."""
    if list(paths).count("-") > 1:
        raise UsageError("stdin ('-') can be given only once")
    bundle = ca_bundle(settings)  # an https manifest's server is trusted as the API is
    sources = [ManifestSource.open(path, format=settings.manifest.format, ca_bundle=bundle) for path in paths]
    options = manifest_options(settings)
    for source in sources:
        preflight(source, options)
    return sources


def results_path(settings: Settings, sources: Sequence[ManifestSource], shard: Shard | None) -> Path:
    """``--results`` (``{shard}`` expanded), or the default name beside the first manifest."""
    shard_pair = (shard.index, shard.count) if shard else None
    if settings.results is not None:
        return expand_shard_placeholder(settings.results, shard_pair)
    if sources[0].path == "-":
        raise UsageError("reading from stdin: give --results PATH")
    return default_results_path(sources[0].path, shard_pair)


def progress_mode(setting: str) -> str:
    """``auto`` is a live bar on a terminal and log events elsewhere."""
    if setting == "auto":
        return "bar" if sys.stderr.isatty() else "log"
    return setting


def run_config(
    settings: Settings, sources: list[ManifestSource], *, limit: int | None = None, handle_signals: bool = False
) -> RunConfig:
    """Translate settings into the pipeline's ``RunConfig``."""
    try:
        keys = KeyDeriver(tuple(settings.key_fields), settings.key_namespace)
    except ValueError as exc:
        raise UsageError(f"key_fields: {exc}") from None
    shard = parse_shard(settings.shard)
    return RunConfig(
        sources=sources,
        results_path=results_path(settings, sources, shard),
        client=ClientOptions(
            base_url=settings.base_url,
            concurrency=settings.concurrency,
            connect_timeout=settings.connect_timeout,
            request_timeout=settings.request_timeout,
            max_response_bytes=settings.max_response_bytes,
            max_server_wait=settings.max_server_wait,
            ca_bundle=ca_bundle(settings),
            proxy=proxy_for(settings.base_url),
        ),
        rate=settings.rate / (shard.count if shard else 1),  # --rate is the whole job's, shared by the shards
        burst=settings.burst,
        manifest_options=manifest_options(settings),
        keys=keys,
        policy=RetryPolicy(
            max_attempts=settings.max_attempts,
            max_retry_time=settings.max_retry_time,
            backoff_initial=settings.backoff_initial,
            backoff_max=settings.backoff_max,
            conflict_window=settings.request_timeout + settings.conflict_margin,
            max_server_wait=settings.max_server_wait,
        ),
        retry_failed=settings.retry_failed,
        grace_period=settings.grace_period,
        fsync_interval=settings.fsync_interval,
        max_failures=settings.max_failures,
        failure_ratio=settings.failure_ratio,
        failure_min_items=settings.failure_min_items,
        require_fal_host=settings.require_fal_host,
        progress_interval=settings.progress_interval,
        handle_signals=handle_signals,
        limit=limit,
        shard=shard,
        max_duration=settings.max_duration,
        max_outage=settings.max_outage,
        strict=settings.strict,
        preflight=settings.preflight,
        progress=progress_mode(settings.progress),
        metrics_port=settings.metrics_port,
        metrics_host=settings.metrics_host,
        metrics_textfile=settings.metrics_textfile,
        rehost_mode=settings.rehost,
        rehost=rehost_config(settings, shard),
    )


def rehost_config(settings: Settings, shard: Shard | None) -> RehostConfig:
    """The rehost stage's settings; ``--bwlimit`` is the whole job's, shared by the shards like ``--rate``."""
    try:
        bwlimit = None if settings.bwlimit is None else parse_size(settings.bwlimit)
    except ValueError as exc:
        raise UsageError(f"--bwlimit: {exc}") from None
    if bwlimit is not None and shard is not None:
        bwlimit = max(1, bwlimit // shard.count)
    return RehostConfig(
        storage_url=settings.storage_url,
        upload_concurrency=settings.upload_concurrency,
        bwlimit=bwlimit,
        options=RehostOptions(dedupe_content=settings.dedupe_content, max_journal_age=settings.multipart_max_age),
    )


def ca_bundle(settings: Settings) -> str | None:
    """``--ca-bundle``, checked now: a missing or unreadable bundle is a usage error, not a TLS failure later."""
    if settings.ca_bundle is None:
        return None
    path = settings.ca_bundle.expanduser()
    try:
        trust(str(path))
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"--ca-bundle {path}: not a readable PEM file of certificates ({exc})") from None
    return str(path)


def event_loop_options(choice: str = "auto") -> dict[str, Any]:
    """uvloop when it is installed (a dependency on the platforms that have it) and not turned off with
    ``event_loop = "asyncio"``; the default asyncio loop otherwise."""
    if choice == "asyncio":
        return {}
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if choice == "uvloop":
            raise UsageError("event_loop = uvloop, but uvloop is not installed") from None
        return {}
    return {"use_uvloop": True}
