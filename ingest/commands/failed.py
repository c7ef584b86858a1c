"""``ingest failed RESULTS… -o rerun.jsonl``: the items that are failed now, as a manifest to run again.

Which items: the current state of each item across the results files, as ``ingest report`` defines it (the
latest record per key; a later success removes the item). ``failed`` ones, and with ``include_invalid``
the ``invalid`` ones too. Filters narrow that down, all of them at once: ``error_types`` (any of),
``http_statuses`` (any of; an invalid row has none), ``retryable_only`` (an invalid row never is).

What each line is (JSONL, one object per line, in the order the manifests were first seen, then by line):

- a failed item: its request body, every optional field written out (``"favorite": false`` …, so that a
  ``[manifest.defaults]`` setting cannot change the body), plus ``"idempotency_key"``: the item's original key.
  ``ingest run`` reads the key verbatim, so the rerun is the same item to the server and to the results file.
- a failed rehost (``source_unreadable``, ``rehost_failed``): the same, its source a local path made absolute from
  its manifest's folder (a rerun manifest written elsewhere still names the same file).
- an invalid row: its fields as they were read, for the user to fix, plus its key if it had a valid one.
  Cells of a CSV manifest were text; ``favorite`` and ``tag_ids`` are written as JSON values when they read
  cleanly (``"yes"`` -> ``true``, ``"a;b"`` -> ``["a", "b"]``). A row recorded without its fields (a line
  that could not be parsed at all) cannot be written: it is counted in ``skipped_no_item``.

Field names are the API's (``url``, ``type``, …): run the manifest without a ``[manifest.columns]`` mapping.
Given the same results file, ``ingest run`` retries retryable failures and skips permanent ones unless
``--retry-failed``; given a new results file it sends every line.

The output is written to a temporary file beside ``out`` and renamed over it, so a reader never sees half a
manifest; ``out=None`` writes to stdout.

``format="csv"`` writes the same rows as CSV, for people who open failures in a spreadsheet: a header of the body
fields (in the spec's order), then any other field seen, then ``idempotency_key``; a list (``tag_ids``) as a JSON
array, a boolean as ``true``/``false``, null as an empty cell. ``ingest run`` reads it back unchanged.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import secrets
import sys
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ingest.errors import UsageError
from ingest.manifest.remote import folder, is_remote, join
from ingest.manifest.rows import parse_favorite, parse_tag_ids
from ingest.models import UploadRequest
from ingest.results.rules import error_of
from ingest.results.scan import read_current, scan_results, where

__all__ = ["FailedSummary", "csv_lines", "manifest_row", "write_failed_manifest"]

STDOUT_NAME = "<stdout>"

# The optional body fields at their spec defaults (prompt/collection_id null, favorite false, tag_ids []).
EXPLICIT_DEFAULTS: dict[str, Any] = {
    name: info.get_default(call_default_factory=True)
    for name, info in UploadRequest.model_fields.items()
    if not info.is_required()
}
BODY_FIELDS = tuple(UploadRequest.model_fields)  # in the spec's order: url, type, prompt, …


@dataclass(slots=True)
class FailedSummary:
    """What ``write_failed_manifest`` wrote, and what it left out."""

    out: str  # the manifest's path, or "<stdout>"
    written: int = 0  # manifest lines written
    skipped_no_item: int = 0  # invalid rows recorded without their fields: nothing to write
    filtered_out: int = 0  # current failures the filters left out
    by_error_type: Counter[str] = field(default_factory=Counter)  # written lines by error type
    unreadable_lines: int = 0  # lines of the results files that were not records
    torn_tails: int = 0  # results files ending in a torn line (ignored)

    def __repr__(self) -> str:
        return (
            f"FailedSummary(out={self.out!r}, written={self.written}, skipped_no_item={self.skipped_no_item}, "
            f"filtered_out={self.filtered_out}, by_error_type={dict(self.by_error_type)})"
        )


def write_failed_manifest(
    paths: Sequence[Path],
    out: Path | None,
    *,
    include_invalid: bool = False,
    error_types: Collection[str] = (),
    http_statuses: Collection[int] = (),
    retryable_only: bool = False,
    format: str = "jsonl",
) -> FailedSummary:
    """Write the current failures of ``paths`` as a JSONL manifest to ``out`` (stdout if ``None``).

    ``UsageError`` if a results file is missing or unreadable, if ``out`` is one of them, or if ``out``
    cannot be written.
    """
    if out is not None and any(_same_file(out, path) for path in paths):
        raise UsageError(f"{out}: is one of the results files given; write the manifest elsewhere")
    manifests: dict[str, int] = {}  # manifest name -> order of first appearance

    def note_manifest(record: dict[str, Any], _stamp: int | None) -> None:
        manifests.setdefault(where(record)[0], len(manifests))

    scan = scan_results(paths, note_manifest)
    summary = FailedSummary(
        out=str(out) if out is not None else STDOUT_NAME,
        unreadable_lines=sum(tally.unreadable for tally in scan.tallies),
        torn_tails=sum(tally.torn_tail for tally in scan.tallies),
    )
    statuses = ("failed", "invalid") if include_invalid else ("failed",)
    selected = _Filter(frozenset(error_types), frozenset(http_statuses), retryable_only)
    chosen: list[tuple[int, int, int, int, dict[str, Any]]] = []  # (manifest order, line, file, offset, row)
    for file, offset, record in read_current(scan, statuses):
        if not selected(record):
            summary.filtered_out += 1
            continue
        row = manifest_row(record)
        if row is None:
            summary.skipped_no_item += 1
            continue
        manifest, line = where(record)
        chosen.append((manifests.get(manifest, len(manifests)), line, file, offset, row))
        summary.by_error_type[str(error_of(record).get("type") or "(no type)")] += 1
    chosen.sort(key=lambda entry: entry[:4])
    rows = [entry[4] for entry in chosen]
    _write(out, csv_lines(rows) if format == "csv" else (_dump(row) for row in rows))
    summary.written = len(chosen)
    return summary


def manifest_row(record: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest row that reruns ``record``'s item (see the module docstring); ``None`` without an item."""
    item = record.get("item")
    if not isinstance(item, dict):
        return None
    if record.get("status") == "failed":
        row = {
            name: item.get(name, EXPLICIT_DEFAULTS.get(name))
            for name in BODY_FIELDS
            if name in item or name in EXPLICIT_DEFAULTS
        }
        row.update(item)  # anything else the body had, as it was
    else:
        row = _typed_cells(item) if _is_csv(where(record)[0]) else dict(item)
    key = record.get("key")
    if isinstance(key, str) and key:
        row["idempotency_key"] = key
    if record.get("status") == "failed":
        _anchor_source(row, where(record)[0])
    return row


def _anchor_source(row: dict[str, Any], manifest: str) -> None:
    """A relative local source path made absolute from its manifest's folder, so that the rerun manifest reads
    the same file wherever it is written (the key is kept verbatim, so the item stays the same)."""
    url = row.get("url")
    if not isinstance(url, str) or not url or "://" in url or url.startswith(("/", "~")) or manifest == "<stdin>":
        return
    if ":" in url.split("/", 1)[0]:
        return  # a scheme (javascript:…, data:…): an invalid row, written as it was
    if is_remote(manifest):  # a row of s3://b/dir/m.csv names s3://b/dir/<url>
        row["url"] = join(folder(manifest), url)
        return
    row["url"] = str((Path(manifest).resolve().parent / url).resolve())


@dataclass(frozen=True, slots=True)
class _Filter:
    """Which current failures to write: every given filter must match (any of its values)."""

    error_types: frozenset[str]  # empty: any type
    http_statuses: frozenset[int]  # empty: any status (or none)
    retryable_only: bool

    def __call__(self, record: dict[str, Any]) -> bool:
        error = error_of(record)
        if self.error_types and error.get("type") not in self.error_types:
            return False
        if self.http_statuses and record.get("http_status") not in self.http_statuses:
            return False
        return not self.retryable_only or bool(error.get("retryable"))


def _is_csv(manifest: str) -> bool:
    return manifest.lower().removesuffix(".gz").endswith(".csv")


def _typed_cells(item: dict[str, Any]) -> dict[str, Any]:
    """A CSV row's text cells, with ``favorite`` and ``tag_ids`` as JSON values where they read cleanly."""
    row = dict(item)
    favorite, tag_ids = row.get("favorite"), row.get("tag_ids")
    if isinstance(favorite, str) and (flag := parse_favorite(favorite)) is not None:
        row["favorite"] = flag
    if isinstance(tag_ids, str) and (tags := parse_tag_ids(tag_ids)) is not None:
        row["tag_ids"] = tags
    return row


def csv_lines(rows: Sequence[dict[str, Any]]) -> Iterable[bytes]:
    """``rows`` as CSV lines (UTF-8, header first); see the module docstring."""
    extra = sorted({name for row in rows for name in row} - set(BODY_FIELDS) - {"idempotency_key"})
    present = {name for row in rows for name in row}
    columns = [name for name in BODY_FIELDS if name in present] + extra + ["idempotency_key"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    yield buffer.getvalue().encode()
    for row in rows:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow([_cell(row.get(name)) for name in columns])
        yield buffer.getvalue().encode()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return orjson.dumps(value).decode()
    return str(value)


def _dump(row: dict[str, Any]) -> bytes:
    return orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def _write(out: Path | None, lines: Iterable[bytes]) -> None:
    if out is None:
        _write_stdout(lines)
    else:
        _write_atomically(out, lines)


def _write_stdout(lines: Iterable[bytes]) -> None:
    sys.stdout.flush()
    stream = getattr(sys.stdout, "buffer", None)  # None when stdout was replaced by a text-only stream
    for line in lines:
        if stream is None:
            sys.stdout.write(line.decode())
        else:
            stream.write(line)
    (stream or sys.stdout).flush()


def _write_atomically(path: Path, lines: Iterable[bytes]) -> None:
    """Write to a temporary file beside ``path``, fsync it, rename it over ``path``."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with temp.open("xb") as file:
            for line in lines:
                file.write(line)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise UsageError(f"{path}: cannot be written ({exc.strerror or exc})") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
