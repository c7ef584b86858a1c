"""One writer per results file: an advisory ``flock`` on ``<results>.lock``.

The kernel releases a ``flock`` when its holder dies, however it dies (SIGKILL included), so a stale lock file
left by a killed run never blocks the next one; only a live process holding the lock does. The file records the
holder's pid, host and start time, to name it in the error.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from types import TracebackType

from ingest.errors import ResultsLockedError
from ingest.results.rules import utc_now


class ResultsLock:
    """Context manager: holds ``<results>.lock`` for the duration of a run."""

    def __init__(self, results_path: Path) -> None:
        self.path = results_path.with_name(results_path.name + ".lock")  # the lock file beside the results
        self._fd: int | None = None  # open descriptor while held

    def __repr__(self) -> str:
        return f"ResultsLock(path={str(self.path)!r}, held={self._fd is not None})"

    def acquire(self) -> None:
        """Take the lock or raise ``ResultsLockedError`` naming the live holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise ResultsLockedError(
                f"{self.path.with_suffix('')} is in use by another ingest run ({holder}); "
                "wait for it to finish or use another --results file"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {utc_now()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock and remove the lock file."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ResultsLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
