"""A manifest's bytes: a local file (watched for rewrites), gzip-decompressed when it is gzip, a URL read in ranged
pieces (``ingest.manifest.remote``), or stdin (borrowed, not closed); and the byte-level helpers that need no
decoding (the first bytes of a file, a newline count)."""

from __future__ import annotations

import gzip
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

from ingest.errors import ManifestError
from ingest.manifest.lines import ByteStream
from ingest.manifest.remote import open_remote
from ingest.manifest.watched import WatchedFile

if TYPE_CHECKING:
    from ingest.manifest.source import ManifestSource

COUNT_CHUNK = 1 << 20  # read size when counting lines


@contextmanager
def open_bytes(source: ManifestSource) -> Iterator[ByteStream]:
    """The manifest's bytes, decompressed; stdin is borrowed, not closed."""
    if source.is_stdin:
        yield sys.stdin.buffer
        return
    if source.is_remote:
        with open_remote(source.path, ca_bundle=source.ca_bundle) as remote:
            yield cast(ByteStream, gzip.GzipFile(fileobj=remote, mode="rb")) if source.gzip else remote
        return
    try:
        file = open(source.path, "rb")  # noqa: SIM115 - closed by the `with` below, after the error mapping
    except OSError as exc:
        raise ManifestError(f"{source.path}: cannot be opened ({exc.strerror or exc})") from exc
    with file:
        watched = WatchedFile(file, source.name)
        if not source.gzip:
            yield watched
            return
        with gzip.GzipFile(fileobj=cast(Any, watched), mode="rb") as unzipped:
            yield cast(ByteStream, unzipped)


def local_first_bytes(path: str, size: int) -> bytes:
    """The first ``size`` bytes of the file at ``path``; ``ManifestError`` if it is missing or unreadable."""
    try:
        with open(path, "rb") as file:
            return file.read(size)
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ManifestError(f"{path}: is a directory, not a manifest file") from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


def count_lines(stream: ByteStream, name: str) -> int:
    """Lines in ``stream`` (a last line without its newline counts), read in 1 MiB pieces without decoding."""
    newlines, last = 0, b"\n"
    try:
        while chunk := stream.read(COUNT_CHUNK):
            newlines += chunk.count(b"\n")
            last = chunk[-1:]
    except (OSError, EOFError, zlib.error) as exc:
        raise ManifestError(f"{name}: cannot be read ({exc})") from exc
    return newlines + (last != b"\n")
