"""The ``ingest`` console script and ``python -m ingest``: how the process comes in and goes out.

In: structlog is imported first, with ``rich`` hidden from it. Whenever rich is installed, structlog imports it (and,
through it, attrs and pygments) for pretty tracebacks in its console renderer: ~50 ms of every start-up, a tenth of a
rerun with nothing to do. ingest's console log shows tracebacks plainly, and rich is imported only to draw the
progress bar (``ingest.run.progress``). A program that imports ``ingest.cli`` itself keeps its own structlog.

Out: after ``main``, its exit handlers (``atexit``: logging, thread pools) and a flush of stdout and stderr,
``os._exit``. By then the command has closed (and, for results, fsynced) everything it wrote; what the interpreter
would still do is free every object and module one by one: ~55 ms, a fifth of a rerun with nothing to do, that the
kernel does at once.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from typing import NoReturn


def console() -> NoReturn:
    """Run the command line of this process and exit with its code."""
    _import_structlog_without_rich()
    from ingest.cli import main

    code = main()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: what could be written was
            stream.flush()
    os._exit(code)


def _import_structlog_without_rich() -> None:
    if "structlog" in sys.modules or "rich" in sys.modules:
        return  # too late to matter, or rich is in use already
    sys.modules["rich"] = None  # type: ignore[assignment]  # ``import rich`` raises ImportError: structlog does without
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["rich"]  # the progress bar imports the real one when it is drawn
