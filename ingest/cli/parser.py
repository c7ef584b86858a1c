"""The command line: one subcommand per job; the run's flags come from ``Settings`` (``ingest.cli.flags``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ingest.cli import offline, run
from ingest.cli.flags import add_column_flag, add_manifest_flags, add_setting_flags
from ingest.version import __version__

# The settings ``ingest validate`` takes: those that change what a row becomes or which rows are valid, and the CAs
# an https manifest's server is trusted by.
VALIDATE_SETTINGS = ("key_fields", "key_namespace", "require_fal_host", "rehost", "ca_bundle")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = argparse.ArgumentParser(prog="ingest", description="Bulk-ingest media into a fal Assets library.")
    parser.add_argument("--version", action="version", version=f"ingest {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _run(commands)
    _check(commands)
    _validate(commands)
    _report(commands)
    _failed(commands)
    _fake_server(commands)
    demo = commands.add_parser("demo", help="the whole job end to end on the embedded fake server, no key needed")
    demo.add_argument("--dir", type=Path, default=Path("demo-output"), help="where the demo writes its files")
    demo.set_defaults(handler=offline.cmd_demo)
    return parser


def _run(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("run", help="upload every item of the manifests (the main job)", allow_abbrev=False)
    parser.add_argument(
        "manifests", nargs="+", metavar="MANIFEST", help="CSV/TSV/JSONL/JSON/URL-list files (.gz too), or - for stdin"
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file (configs/*.toml)")
    parser.add_argument("--limit", type=int, metavar="N", help="send at most N items (try a run on a slice)")
    parser.add_argument("--dry-run", action="store_true", help="validate and count what would be sent; send nothing")
    # Set by ``--processes`` on its children: the parent holds the results family's lock for them.
    parser.add_argument("--family-lock-held", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="run N worker processes over disjoint shards (rate divided among them)",
    )
    add_setting_flags(parser)
    add_manifest_flags(parser)
    add_column_flag(parser)
    parser.set_defaults(handler=run.cmd_run)


def _check(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ingest.cli.check import CHECK_SETTINGS, cmd_check

    parser = commands.add_parser("check", help="probe the endpoint and the key (the run's preflight) and exit")
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file (configs/*.toml)")
    add_setting_flags(parser, CHECK_SETTINGS)
    parser.set_defaults(handler=cmd_check)


def _validate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("validate", help="check manifests without sending anything")
    parser.add_argument("manifests", nargs="+", metavar="MANIFEST")
    parser.add_argument("--config", type=Path, metavar="FILE")
    parser.add_argument("--show", type=int, default=20, metavar="N", help="print the first N problems")
    add_setting_flags(parser, VALIDATE_SETTINGS)
    add_manifest_flags(parser)
    add_column_flag(parser)
    parser.set_defaults(handler=offline.cmd_validate)


def _report(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("report", help="summarise results files (shards too): counts, errors, latency")
    parser.add_argument("results", nargs="+", type=Path, metavar="RESULTS")
    parser.add_argument("--json", action="store_true", help="machine-readable JSON instead of tables")
    parser.add_argument("--top", type=int, default=5, metavar="N", help="how many top error messages")
    parser.set_defaults(handler=offline.cmd_report)


def _failed(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("failed", help="write the failed items as a manifest to rerun (keys kept)")
    parser.add_argument("results", nargs="+", type=Path, metavar="RESULTS")
    parser.add_argument("-o", "--output", type=Path, metavar="OUT", help="manifest to write (default: stdout)")
    parser.add_argument("--include-invalid", action="store_true", help="also write invalid rows (to fix them)")
    parser.add_argument("--error-type", action="append", default=[], metavar="TYPE", help="only this error type")
    parser.add_argument(
        "--http-status", action="append", default=[], type=int, metavar="N", help="only this HTTP status"
    )
    parser.add_argument("--retryable-only", action="store_true", help="only failures a rerun would retry")
    parser.add_argument(
        "--format", choices=("jsonl", "csv"), default="jsonl", help="jsonl (default) or csv (for a spreadsheet)"
    )
    parser.set_defaults(handler=offline.cmd_failed)


def _fake_server(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "fake-server", help="run the embedded fake Assets API (/v1) and fal storage API (the root) on loopback"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--profile", default="none", help="fault profile name (configs/faults/*.toml) or a path")
    parser.add_argument("--key", default="fake-key", help="the API key the server accepts")
    parser.add_argument("--token-ttl", type=float, default=3600.0, help="seconds a storage token is accepted")
    parser.add_argument(
        "--strict-urls", action="store_true", help="reject asset urls the storage did not issue (not on a fal host)"
    )
    parser.set_defaults(handler=offline.cmd_fake_server)
