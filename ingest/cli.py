"""The ``ingest`` command line (``DESIGN.md`` § CLI): parse, resolve settings, hand over, map the outcome to an
exit code. Nothing here knows how uploads work.

Every flag of ``run`` is a setting (``ingest.settings.Settings``); a flag given on the command line beats the
``INGEST_*`` variable, which beats the ``--config`` file, which beats the default.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import structlog

from ingest import __version__
from ingest.admission.keys import KeyDeriver
from ingest.admission.shard import Shard, parse_shard
from ingest.credentials import resolve_api_key
from ingest.errors import EXIT_ITEMS_FAILED, EXIT_USAGE, IngestError, UsageError
from ingest.logs import configure_logging, redact
from ingest.manifest.source import ManifestOptions, ManifestSource, preflight
from ingest.run.pipeline import RunConfig, RunReport, run_pipeline
from ingest.settings import Settings, build_settings
from ingest.upload.client import ClientOptions
from ingest.upload.retry import RetryPolicy

log = structlog.get_logger("ingest.cli")


def _csv_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


# (flag, settings field, argparse options) — the run flags; each maps to one setting.
RUN_FLAGS: list[tuple[str, str, dict[str, Any]]] = [
    ("--results", "results", {"metavar": "PATH", "help": "results file (default: <first manifest>.results.jsonl)"}),
    ("--base-url", "base_url", {"metavar": "URL", "help": "API root, e.g. https://api.fal.ai/v1"}),
    ("--concurrency", "concurrency", {"type": int, "metavar": "N", "help": "requests in flight at once"}),
    ("--rate", "rate", {"type": float, "metavar": "R", "help": "requests per second, retries included"}),
    ("--burst", "burst", {"type": float, "metavar": "B", "help": "rate limiter bucket size"}),
    ("--max-attempts", "max_attempts", {"type": int, "metavar": "N", "help": "attempts per item"}),
    (
        "--max-retry-time",
        "max_retry_time",
        {"type": float, "metavar": "S", "help": "seconds per item, retries included"},
    ),
    ("--request-timeout", "request_timeout", {"type": float, "metavar": "S", "help": "seconds per request"}),
    ("--connect-timeout", "connect_timeout", {"type": float, "metavar": "S", "help": "seconds to connect"}),
    ("--key-fields", "key_fields", {"type": _csv_list, "metavar": "F,F", "help": "identity fields for the key"}),
    ("--key-namespace", "key_namespace", {"metavar": "NAME", "help": "derive keys in another namespace"}),
    ("--key-file", "key_file", {"metavar": "PATH", "help": "read the API key from this file"}),
    ("--retry-failed", "retry_failed", {"action": "store_true", "help": "retry permanent failures too"}),
    ("--grace-period", "grace_period", {"type": float, "metavar": "S", "help": "drain time after a signal"}),
    ("--max-failures", "max_failures", {"type": int, "metavar": "N", "help": "abort after N failed items"}),
    ("--failure-ratio", "failure_ratio", {"type": float, "metavar": "X", "help": "abort above this failed share"}),
    ("--allow-insecure-http", "allow_insecure_http", {"action": "store_true", "help": "allow http to non-loopback"}),
    ("--require-fal-host", "require_fal_host", {"action": "store_true", "help": "reject non-fal media URLs"}),
    ("--log-format", "log_format", {"choices": ["auto", "json", "console"], "help": "log renderer"}),
    ("--log-level", "log_level", {"choices": ["debug", "info", "warning", "error"], "help": "log level"}),
    ("--progress", "progress", {"choices": ["auto", "bar", "log", "off"], "help": "progress display"}),
    (
        "--progress-interval",
        "progress_interval",
        {"type": float, "metavar": "S", "help": "seconds between progress events"},
    ),
    ("--event-loop", "event_loop", {"choices": ["auto", "uvloop", "asyncio"], "help": "event loop (auto: uvloop)"}),
    ("--shard", "shard", {"metavar": "K/N", "help": "take shard K of N (K from JOB_COMPLETION_INDEX with /N)"}),
    ("--max-duration", "max_duration", {"type": float, "metavar": "S", "help": "stop taking items after S s"}),
    ("--metrics-port", "metrics_port", {"type": int, "metavar": "P", "help": "serve Prometheus metrics on port P"}),
    ("--metrics-host", "metrics_host", {"metavar": "ADDR", "help": "bind address of the metrics endpoint"}),
    ("--metrics-textfile", "metrics_textfile", {"metavar": "PATH", "help": "write metrics to a textfile"}),
]
MANIFEST_FLAGS: list[tuple[str, str, dict[str, Any]]] = [
    ("--format", "format", {"choices": ["csv", "jsonl"], "help": "manifest format (required for stdin '-')"}),
    ("--strict-columns", "strict_columns", {"action": "store_true", "help": "unknown columns are errors"}),
    ("--max-line-bytes", "max_line_bytes", {"type": int, "metavar": "N", "help": "longest manifest line"}),
]


def _add_flags(parser: argparse.ArgumentParser, flags: list[tuple[str, str, dict[str, Any]]], prefix: str) -> None:
    for flag, dest, options in flags:
        parser.add_argument(flag, dest=f"{prefix}{dest}", default=argparse.SUPPRESS, **options)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = argparse.ArgumentParser(prog="ingest", description="Bulk-ingest media into a fal Assets library.")
    parser.add_argument("--version", action="version", version=f"ingest {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="upload every item of the manifests (the main job)", allow_abbrev=False)
    run.add_argument("manifests", nargs="+", metavar="MANIFEST", help="CSV/JSONL files (.gz too), or - for stdin")
    run.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file (configs/*.toml)")
    run.add_argument("--limit", type=int, metavar="N", help="send at most N items (try a run on a slice)")
    run.add_argument("--dry-run", action="store_true", help="validate and count what would be sent; send nothing")
    run.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="run N worker processes over disjoint shards (rate divided among them)",
    )
    _add_flags(run, RUN_FLAGS, "s.")
    _add_flags(run, MANIFEST_FLAGS, "m.")
    run.set_defaults(handler=cmd_run)

    validate = commands.add_parser("validate", help="check manifests without sending anything")
    validate.add_argument("manifests", nargs="+", metavar="MANIFEST")
    validate.add_argument("--config", type=Path, metavar="FILE")
    validate.add_argument("--show", type=int, default=20, metavar="N", help="print the first N problems")
    validate.add_argument("--key-fields", dest="s.key_fields", type=_csv_list, default=argparse.SUPPRESS)
    validate.add_argument("--key-namespace", dest="s.key_namespace", default=argparse.SUPPRESS)
    _add_flags(validate, MANIFEST_FLAGS, "m.")
    validate.set_defaults(handler=cmd_validate)

    report = commands.add_parser("report", help="summarise results files (shards too): counts, errors, latency")
    report.add_argument("results", nargs="+", type=Path, metavar="RESULTS")
    report.add_argument("--json", action="store_true", help="machine-readable JSON instead of tables")
    report.add_argument("--top", type=int, default=5, metavar="N", help="how many top error messages")
    report.set_defaults(handler=cmd_report)

    failed = commands.add_parser("failed", help="write the failed items as a manifest to rerun (keys kept)")
    failed.add_argument("results", nargs="+", type=Path, metavar="RESULTS")
    failed.add_argument("-o", "--output", type=Path, metavar="OUT", help="manifest to write (default: stdout)")
    failed.add_argument("--include-invalid", action="store_true", help="also write invalid rows (to fix them)")
    failed.add_argument("--error-type", action="append", default=[], metavar="TYPE", help="only this error type")
    failed.add_argument("--http-status", action="append", default=[], type=int, metavar="N", help="only this status")
    failed.add_argument("--retryable-only", action="store_true", help="only failures a rerun would retry")
    failed.set_defaults(handler=cmd_failed)

    fake = commands.add_parser("fake-server", help="run the embedded fake Assets API on loopback")
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=int, default=8787)
    fake.add_argument("--profile", default="none", help="fault profile name (configs/faults/*.toml) or a path")
    fake.add_argument("--key", default="fake-key", help="the API key the server accepts")
    fake.set_defaults(handler=cmd_fake_server)

    demo = commands.add_parser("demo", help="the whole job end to end on the embedded fake server, no key needed")
    demo.add_argument("--dir", type=Path, default=Path("demo-output"), help="where the demo writes its files")
    demo.set_defaults(handler=cmd_demo)
    return parser


def _layers(args: argparse.Namespace) -> dict[str, Any]:
    """The flags that were given, as a settings layer."""
    flags: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if dest.startswith("s."):
            flags[dest[2:]] = value
        elif dest.startswith("m."):
            flags.setdefault("manifest", {})[dest[2:]] = value
    return flags


def load_settings(args: argparse.Namespace) -> Settings:
    """Flags > env > ``--config`` file > defaults."""
    return build_settings(flags=_layers(args), config_file=getattr(args, "config", None))


def manifest_options(settings: Settings) -> ManifestOptions:
    """The reader options from settings."""
    m = settings.manifest
    return ManifestOptions(
        strict_columns=m.strict_columns,
        max_line_bytes=m.max_line_bytes,
        columns=m.columns,
        defaults=m.defaults,
        infer_type=m.infer_type,
    )


def open_sources(paths: Sequence[str], settings: Settings) -> list[ManifestSource]:
    """Open and preflight every manifest before anything is sent (a bad file is exit 2, not a half run)."""
    if list(paths).count("-") > 1:
        raise UsageError("stdin ('-') can be given only once")
    sources = [ManifestSource.open(path, format=settings.manifest.format) for path in paths]
    options = manifest_options(settings)
    for source in sources:
        preflight(source, options)
    return sources


def check_transport(base_url: str, *, allow_insecure_http: bool) -> None:
    """The key goes only over https, or plain http to loopback, unless explicitly allowed."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--base-url must be an http(s) URL with a host, got {base_url!r}")
    if parts.scheme == "https" or allow_insecure_http:
        return
    host = parts.hostname
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise UsageError(f"refusing to send the API key over plain http to {host}; use https, or --allow-insecure-http")


def results_path(settings: Settings, sources: Sequence[ManifestSource], shard: Shard | None) -> Path:
    """``--results`` (with ``{shard}`` replaced by ``shard-K-of-N``), or ``<first manifest>.results.jsonl`` beside
    it (``<manifest>.results.shard-K-of-N.jsonl`` when sharded)."""
    shard_tag = f"shard-{shard.index}-of-{shard.count}" if shard else "shard-0-of-1"
    if settings.results is not None:
        return Path(str(settings.results).replace("{shard}", shard_tag))
    first = sources[0]
    if first.path == "-":
        raise UsageError("reading from stdin: give --results PATH")
    path = Path(first.path)
    name = path.name
    for suffix in (".gz", ".csv", ".jsonl", ".ndjson"):
        name = name.removesuffix(suffix)
    return path.with_name(f"{name}.results.{shard_tag}.jsonl" if shard else f"{name}.results.jsonl")


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
            conflict_attempts=settings.conflict_attempts,
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
        progress=progress_mode(settings.progress),
        metrics_port=settings.metrics_port,
        metrics_host=settings.metrics_host,
        metrics_textfile=settings.metrics_textfile,
    )


def cmd_run(args: argparse.Namespace) -> int:
    """``ingest run``."""
    settings = load_settings(args)
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    check_transport(settings.base_url, allow_insecure_http=settings.allow_insecure_http)
    sources = open_sources(args.manifests, settings)
    config = run_config(settings, sources, limit=args.limit, handle_signals=True)
    if args.dry_run:
        return dry_run(config, estimate_rate=settings.rate)
    if args.processes > 1:
        if config.shard is not None:
            raise UsageError("--processes and --shard do not combine: shard across machines, or processes on one")
        from ingest.run.processes import run_processes

        return run_processes(args.argv, count=args.processes, results=config.results_path)
    api_key = resolve_api_key(key_file=settings.key_file)
    configure_logging(fmt=settings.log_format, level=settings.log_level, secrets=[api_key.reveal()])
    report: RunReport = anyio.run(
        run_pipeline, config, api_key, backend_options=event_loop_options(settings.event_loop)
    )
    print_summary(report)
    return report.exit_code


def dry_run(config: RunConfig, *, estimate_rate: float, out: Any = None) -> int:
    """``ingest run --dry-run``: what the run would do, and how long it would take at the configured rate."""
    from ingest.commands.validate import plan
    from ingest.results.index import load_index

    out = out or sys.stdout
    index = load_index(config.results_path)
    result = plan(
        config.sources,
        config.manifest_options,
        config.keys,
        index=index,
        retry_failed=config.retry_failed,
        shard=config.shard,
    )
    c = result.counts
    send = c["send"] if config.limit is None else min(c["send"], config.limit)
    seconds = send / config.rate
    print(f"dry run over {result.rows} rows (results: {config.results_path}, {len(index)} keys known):", file=out)
    print(
        f"  new: {c['new']}  will retry: {c['retry']}  already done: {c['skip_done']}  "
        f"failed earlier (not retried without --retry-failed): {c['skip_failed']}",
        file=out,
    )
    print(f"  duplicate: {c['duplicate']}  invalid: {c['invalid']}  changed since ingested: {c['changed']}", file=out)
    print(
        f"  would send {send} items; at {config.rate:g} requests/s that takes at least {_duration(seconds)}"
        f"{f' (shard {config.shard}, the job rate {estimate_rate:g}/s divided)' if config.shard else ''}",
        file=out,
    )
    for problem in result.problems:
        print(f"  {problem}", file=out)
    return EXIT_ITEMS_FAILED if c["invalid"] else 0


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


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


def print_summary(report: RunReport, *, out: Any = None) -> None:
    """A short human summary on stderr (the JSON ``run.summary`` event carries the same figures)."""
    out = out or sys.stderr
    s = report.stats.snapshot()
    stats = report.stats
    skipped = f"{stats.skipped_done} already done"
    if stats.skipped_failed:
        skipped += f", {stats.skipped_failed} failed earlier and not retried (--retry-failed retries them)"
    lines = [
        f"ingest: {s['succeeded']} succeeded, {s['failed']} failed, {s['invalid']} invalid, "
        f"{s['duplicate']} duplicate, skipped: {skipped} — "
        f"{s['requests']} requests ({s['retries']} retries) in {s['elapsed_s']:.1f}s",
        f"results: {report.results_path}",
    ]
    if report.aborted is not None:
        lines.append(f"aborted: {report.aborted} — unfinished items stay pending for the next run")
    elif report.interrupted:
        lines.append("interrupted: the results file is complete up to here; run the same command to continue")
    print(redact("\n".join(lines)), file=out)


def cmd_validate(args: argparse.Namespace) -> int:
    """``ingest validate``: no network; counts and the first problems."""
    from ingest.commands.validate import validate_manifests

    settings = load_settings(args)
    configure_logging(fmt=settings.log_format, level="error")  # the report below says it all
    sources = open_sources(args.manifests, settings)
    keys = KeyDeriver(tuple(settings.key_fields), settings.key_namespace)
    return validate_manifests(sources, manifest_options(settings), keys, show=args.show)


def cmd_report(args: argparse.Namespace) -> int:
    """``ingest report``."""
    from ingest.commands.report import build_report, render_json, render_text

    report = build_report(args.results)
    print(render_json(report) if args.json else render_text(report, top=args.top))
    return 0


def cmd_failed(args: argparse.Namespace) -> int:
    """``ingest failed``."""
    from ingest.commands.failed import write_failed_manifest

    summary = write_failed_manifest(
        args.results,
        args.output,
        include_invalid=args.include_invalid,
        error_types=args.error_type,
        http_statuses=args.http_status,
        retryable_only=args.retryable_only,
    )
    by_type = ", ".join(f"{kind}: {count}" for kind, count in sorted(summary.by_error_type.items()))
    print(
        f"ingest: wrote {summary.written} items to {summary.out}"
        + (f" ({by_type})" if by_type else "")
        + (f"; {summary.filtered_out} left out by filters" if summary.filtered_out else "")
        + (f"; {summary.skipped_no_item} invalid rows had no fields to write" if summary.skipped_no_item else ""),
        file=sys.stderr,
    )
    if summary.written and args.output is not None:
        print(f"rerun with: ingest run {args.output} --results <the same results file>", file=sys.stderr)
    return 0


def cmd_fake_server(args: argparse.Namespace) -> int:
    """``ingest fake-server``: serve until SIGINT/SIGTERM."""
    from ingest.fakeserver import FakeServer, FakeServerConfig, load_profile, serve_forever

    try:
        faults = load_profile(args.profile)
    except (ValueError, OSError) as exc:
        raise UsageError(f"--profile: {exc}") from None
    config = FakeServerConfig(api_key=args.key, faults=faults)

    def ready(server: FakeServer) -> None:
        print(
            f"fake Assets API listening: --base-url {server.url}  (key: {args.key}, profile: {args.profile})",
            file=sys.stderr,
            flush=True,
        )
        print(f"admin: {server.admin_url}/stats", file=sys.stderr, flush=True)

    async def serve() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_cancel_on_signal, tg.cancel_scope)
            await serve_forever(config, host=args.host, port=args.port, on_ready=ready)

    anyio.run(serve)
    return 0


async def _cancel_on_signal(scope: anyio.CancelScope) -> None:
    import signal

    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


def cmd_demo(args: argparse.Namespace) -> int:
    """``ingest demo``."""
    from ingest.commands.demo import run_demo

    return run_demo(args.dir)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except IngestError as exc:
        print(redact(f"ingest: error: {exc}"), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_USAGE
