"""The console script ``ingest``: parse, dispatch to a command, turn errors into one line and an exit code.

``parser`` builds the command line (run flags generated from ``Settings`` by ``flags``); ``run`` translates
settings into a ``RunConfig`` and runs the pipeline; ``offline`` holds the commands that send nothing to the API
(validate, report, failed, fake-server, demo); ``output`` prints for a person.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from ingest.errors import EXIT_USAGE, IngestError
from ingest.logs import redact
from ingest.terminal import for_terminal

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The whole command line (``ingest.cli.parser``)."""
    from ingest.cli.parser import build_parser as build

    return build()


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
        print(for_terminal(redact(f"ingest: error: {exc}")), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_USAGE
