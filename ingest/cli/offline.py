"""The commands that send nothing to the API: validate, report, failed, fake-server, demo."""

from __future__ import annotations

import argparse
import sys

import anyio

from ingest.admission.admit import Rules
from ingest.admission.keys import KeyDeriver
from ingest.admission.shard import parse_shard
from ingest.errors import UsageError
from ingest.logs import configure_logging
from ingest.terminal import for_terminal


def cmd_validate(args: argparse.Namespace) -> int:
    """``ingest validate``: no network; counts and the first problems."""
    from ingest.cli.run import load_settings, manifest_options, open_sources
    from ingest.commands.validate import validate_manifests

    settings = load_settings(args)
    configure_logging(fmt=settings.log_format, level="error")  # the report below says it all
    sources = open_sources(args.manifests, settings)
    keys = KeyDeriver(tuple(settings.key_fields), settings.key_namespace)
    # The rules `ingest run` would apply (run_config's RunConfig.rules): one verdict for every row.
    rules = Rules(keys, require_fal_host=settings.require_fal_host, shard=parse_shard(settings.shard))
    return validate_manifests(sources, manifest_options(settings), rules, show=args.show)


def cmd_report(args: argparse.Namespace) -> int:
    """``ingest report``."""
    from ingest.commands.report import build_report, render_json, render_text

    report = build_report(args.results)
    print(render_json(report) if args.json else for_terminal(render_text(report, top=args.top)))
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
        format=args.format,
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
    from ingest.fakeserver import FakeServer, FakeServerConfig, StorageConfig, load_profile, serve_forever

    try:
        faults = load_profile(args.profile)
    except (ValueError, OSError) as exc:
        raise UsageError(f"--profile: {exc}") from None
    config = FakeServerConfig(
        api_key=args.key,
        faults=faults,
        storage=StorageConfig(token_ttl_s=args.token_ttl),
        strict_urls=args.strict_urls,
    )

    def ready(server: FakeServer) -> None:
        print(
            f"fake Assets API listening: --base-url {server.url}  (key: {args.key}, profile: {args.profile})",
            file=sys.stderr,
            flush=True,
        )
        print(f"fal storage API listening: --storage-url {server.storage_url}", file=sys.stderr, flush=True)
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
