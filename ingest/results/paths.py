"""The local files a run writes, checked before anything is sent: none may be one of its inputs, and each must be
a regular file (or not exist yet).

Paths are compared as files, not as strings: by their resolved path (symlinks followed) and, where they exist, by
device and inode (hard links). A results file that is a manifest would append records to the manifest and read
them back as rows forever; a metrics textfile that is the results file would replace every record. Both are
refused (exit 2) naming the two settings. A results path that is a directory, a device such as ``/dev/full``, or
a FIFO is refused the same way: reading it back would never end, or writing it would fail later.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ingest.errors import UsageError
from ingest.results.naming import family, shard_results_path


@dataclass(frozen=True, slots=True)
class Named:
    """A path and the setting that named it (for the message)."""

    what: str  # "--results", "manifest", "--metrics-textfile", …
    path: Path


def _identity(path: Path) -> tuple[str, tuple[int, int] | None]:
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return real, None
    return real, (st.st_dev, st.st_ino)


def _same(a: Path, b: Path) -> bool:
    real_a, inode_a = _identity(a)
    real_b, inode_b = _identity(b)
    return real_a == real_b or (inode_a is not None and inode_a == inode_b)


def check_writable_file(named: Named) -> None:
    """Refuse an output path that exists but is not a regular file, or whose directory is a file."""
    path = named.path
    try:
        st = os.stat(path)
    except FileNotFoundError:
        parent = Path(os.path.realpath(path)).parent
        if parent.exists() and not parent.is_dir():
            raise UsageError(f"{named.what} {path}: {parent} is not a directory") from None
        return
    except OSError as exc:
        raise UsageError(f"{named.what} {path}: cannot be used ({exc.strerror})") from None
    if stat.S_ISREG(st.st_mode):
        return
    kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (a device, FIFO or socket)"
    raise UsageError(f"{named.what} {path} is {kind}; give a file path")


def run_outputs(
    results: Path, *, processes: int = 1, metrics_textfile: Path | None = None
) -> tuple[list[Named], Named | None]:
    """Every file of the results family a run may write or read back (with the lock files), and the metrics
    textfile (named apart: it must also differ from the family)."""
    members = [results, *family(results)]
    if processes > 1:
        members += [shard_results_path(results, k, processes) for k in range(processes)]
    outputs: list[Named] = []
    for member in dict.fromkeys(members):
        outputs.append(Named("--results", member))
        outputs.append(Named("the results lock file", member.with_name(member.name + ".lock")))
    metrics = Named("--metrics-textfile", metrics_textfile) if metrics_textfile is not None else None
    return outputs, metrics


def check_outputs_are_not_inputs(
    results: Path,
    *,
    inputs: Iterable[Named],
    processes: int = 1,
    metrics_textfile: Path | None = None,
) -> None:
    """Refuse (``UsageError``, exit 2) any output that is an input or another output; see the module docstring."""
    outputs, metrics = run_outputs(results, processes=processes, metrics_textfile=metrics_textfile)
    check_writable_file(Named("--results", results))
    if metrics is not None:
        check_writable_file(metrics)
    written: Sequence[Named] = [*outputs, *([metrics] if metrics else [])]
    sources = list(inputs)
    for out in written:
        for source in sources:
            if _same(out.path, source.path):
                raise UsageError(
                    f"{out.what} {out.path} is the same file as {source.what} {source.path}: "
                    "a run must not write its own input; choose another path"
                )
    if metrics is not None:
        for out in outputs:
            if _same(metrics.path, out.path):
                raise UsageError(
                    f"--metrics-textfile {metrics.path} is the same file as {out.what} {out.path}: "
                    "writing metrics there would destroy the records; choose another path"
                )
