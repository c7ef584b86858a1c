"""Run records: what a results file says about the runs that wrote it, beside the items' records.

Two lines per run, written by the sink (the file's only writer): ``run_started`` first, ``run_ended`` last::

    {"record": "run_started", "run_id": "…", "started_at": "…Z", "version": "…",
     "manifests": [{"path": "media.csv", "size": 81234, "head_sha256": "…"}],
     "key_fields": ["url"], "key_namespace": null}
    {"record": "run_ended", "run_id": "…", "started_at": "…Z", "ended_at": "…Z", "duration_s": 812.4,
     "outcome": "completed" | "interrupted" | "aborted", "reason": "…" | null, "exit_code": 0,
     "counts": {"total": …, "succeeded": …, "failed": …, "invalid": …, "duplicate": …, "skipped": …, …}}

A run record has ``record`` and no ``status``/``key``: the resume index, ``ingest report``'s item view and
``ingest failed`` skip it as an item (``is_run_record``); ``ingest report`` reads it for the verdict. A run killed
with SIGKILL leaves a ``run_started`` without its ``run_ended``.

``manifests`` and the key settings say which manifests a results file belongs to: ``head_sha256`` is the SHA-256
of the manifest's first ``HEAD_BYTES`` bytes (its first rows), so a renamed or moved manifest is still recognised,
and another manifest is told apart without reading it whole.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ingest.manifest.remote import display_name, is_remote, read_head

__all__ = [
    "HEAD_BYTES",
    "RUN_ENDED",
    "RUN_STARTED",
    "RunHistory",
    "is_run_record",
    "manifest_identity",
    "run_record_line",
]

RUN_STARTED = "run_started"
RUN_ENDED = "run_ended"
RUN_RECORD_PREFIX = b'{"record":"run_'  # how a run record's line starts (``run_record_line`` writes it so)
HEAD_BYTES = 64 * 1024  # the manifest bytes fingerprinted: its first rows


def run_record_line(kind: str, **fields: Any) -> bytes:
    """One run record as a results line (``record`` first, so readers can tell it from the line's start)."""
    return orjson.dumps({"record": kind, **fields}, option=orjson.OPT_APPEND_NEWLINE)


def is_run_record(record: object) -> bool:
    """Whether a parsed results line is a run record (not an item's)."""
    return isinstance(record, dict) and record.get("record") in (RUN_STARTED, RUN_ENDED)


def manifest_identity(path: str, *, ca_bundle: str | None = None) -> dict[str, Any]:
    """``{"path", "size", "head_sha256"}`` of a manifest file or URL (stdin: path ``-``, size and fingerprint
    null); ``ca_bundle``: the CAs an https manifest's server is trusted by (``--ca-bundle``)."""
    if path == "-":
        return {"path": "-", "size": None, "head_sha256": None}
    if is_remote(path):  # one ranged GET of its first bytes; the URL without its query (a signature)
        got = read_head(path, HEAD_BYTES, ca_bundle=ca_bundle)
        name = display_name(path)
        if got is None:
            return {"path": name, "size": None, "head_sha256": None}
        return {"path": name, "size": got[0], "head_sha256": hashlib.sha256(got[1]).hexdigest()}
    file = Path(path)
    try:
        with file.open("rb") as handle:
            head = handle.read(HEAD_BYTES)
        size: int | None = file.stat().st_size
    except OSError:
        return {"path": path, "size": None, "head_sha256": None}
    return {"path": path, "size": size, "head_sha256": hashlib.sha256(head).hexdigest()}


@dataclass(slots=True)
class RunHistory:
    """The run records of one results file, in file order (a few lines per run: kept whole)."""

    started: list[dict[str, Any]] = field(default_factory=list)  # run_started records
    ended: dict[str, dict[str, Any]] = field(default_factory=dict)  # run_id -> its run_ended record

    def __repr__(self) -> str:
        return f"RunHistory(runs={len(self.started)}, ended={len(self.ended)})"

    def __len__(self) -> int:
        """Run records folded in."""
        return len(self.started) + len(self.ended)

    def add(self, record: dict[str, Any]) -> None:
        """Fold one run record in."""
        if record.get("record") == RUN_STARTED:
            self.started.append(record)
        elif record.get("record") == RUN_ENDED:
            self.ended[str(record.get("run_id"))] = record

    @property
    def last(self) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
        """The last run's ``run_started`` and its ``run_ended`` (``None`` if it never ended), or ``None``."""
        if not self.started:
            return None
        started = self.started[-1]
        return started, self.ended.get(str(started.get("run_id")))

    def manifests(self) -> list[dict[str, Any]]:
        """Every manifest identity any run recorded."""
        return [m for started in self.started for m in started.get("manifests") or [] if isinstance(m, dict)]

    def key_settings(self) -> dict[str, Any] | None:
        """The key settings of the last run (``key_fields``, ``key_namespace``), or ``None`` without runs."""
        if not self.started:
            return None
        last = self.started[-1]
        return {"key_fields": last.get("key_fields"), "key_namespace": last.get("key_namespace")}
