"""One writer per results file, and one job per results family: advisory ``flock``s on ``<file>.lock``.

The kernel releases a ``flock`` when its holder dies, however it dies (SIGKILL included), so a stale lock file
left by a killed run never blocks the next one; only a live process holding the lock does. The file records the
holder's pid, host and start time, to name it in the error.

Locks are taken on the *resolved* file (symlinks followed), so ``r.jsonl`` and a link to it are one lock. A run
also locks its *family* (``ingest.results.naming``) through the base file's lock: exclusively when it reads and
writes the family as a whole (a plain run, or the parent of ``--processes N``, whose children then skip it), shared
when it is one shard among others (``--shard K/N``, where each shard's own file lock keeps its writer single).
So a plain run beside a ``--processes`` run on the same family, or beside any shard of it, is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path
from types import TracebackType
from typing import Literal

from ingest.errors import LocalIOError, ResultsLockedError
from ingest.results.naming import family_base
from ingest.results.rules import utc_now

FamilyMode = Literal["exclusive", "shared", "held"]  # "held": the parent process holds it for us


def resolved(path: Path) -> Path:
    """``path`` with symlinks followed (also when the file does not exist yet)."""
    return Path(os.path.realpath(path))


class _FileLock:
    """One ``flock`` on one lock file."""

    def __init__(self, path: Path, *, shared: bool) -> None:
        self.path = path
        self.shared = shared
        self.fd: int | None = None

    def acquire(self, results: Path) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise LocalIOError(f"cannot create the lock file {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise ResultsLockedError(
                f"{results} is in use by another ingest run ({holder}); "
                "wait for it to finish or use another --results file"
            ) from None
        if not self.shared:
            with contextlib.suppress(OSError):  # the holder's name is a courtesy; a full disk must not stop us here
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {utc_now()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if not self.shared:  # a shared lock file may still be held by another shard: leave it
                with contextlib.suppress(OSError):  # a read-only filesystem must not hide why the run stopped
                    self.path.unlink(missing_ok=True)
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


class ResultsLock:
    """Context manager: holds the results file's lock (and its family's) for the duration of a run."""

    def __init__(self, results_path: Path, *, family: FamilyMode = "exclusive") -> None:
        real = resolved(results_path)
        self.results = results_path
        self.path = real.with_name(real.name + ".lock")  # the lock file beside the resolved results file
        base = family_base(real)
        self._locks: list[_FileLock] = []  # the family's (unless it is this file's own or held for us), then own
        if family != "held" and base != real:
            self._locks.append(_FileLock(base.with_name(base.name + ".lock"), shared=family == "shared"))
        self._locks.append(_FileLock(self.path, shared=False))

    def __repr__(self) -> str:
        held = bool(self._locks) and all(lock.fd is not None for lock in self._locks)
        return f"ResultsLock(path={str(self.path)!r}, held={held})"

    def acquire(self) -> None:
        """Take every lock or raise ``ResultsLockedError`` naming the live holder (holding none)."""
        try:
            for lock in self._locks:
                lock.acquire(self.results)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Drop the locks and remove the lock files this run owned alone."""
        for lock in reversed(self._locks):
            lock.release()

    def __enter__(self) -> ResultsLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
