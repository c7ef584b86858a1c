"""Deciding what happens to each manifest row before any request — pure, shared by ``run``, ``validate`` and
``run --dry-run``.

``Admission.admit(row)`` returns one of:
- a ``WorkItem`` — send it;
- a ``Result`` — record it without a request: an invalid row, a duplicate of an earlier row (same key, same
  body), a conflict (same key, other body: invalid, naming both lines), or a row that changed since an earlier run
  ingested it;
- a ``Verdict.SKIP_DONE`` / ``Verdict.SKIP_FAILED`` — an earlier run settled it;
- ``Verdict.OTHER_SHARD`` — another shard's item (``--shard K/N``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import structlog

from ingest.admission.hosts import is_fal_host, whatwg_host
from ingest.admission.keys import KeyDeriver, body_sha256
from ingest.admission.seen import SeenKeys
from ingest.admission.shard import Shard
from ingest.keytable import fingerprint
from ingest.manifest.source import ManifestRow
from ingest.models import canonical_bytes
from ingest.results.index import ResumeIndex, Verdict
from ingest.results.record import Result, Status, error_dict

log = structlog.get_logger("ingest.admission.admit")


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One item on its way to the API; everything about it is decided before it is queued."""

    manifest: str
    line: int
    key: str
    body: dict[str, Any]
    body_bytes: bytes
    body_sha256: str
    index: int | None = None  # the item's position in its record, when one record made several items
    row_fp: int = 0  # fingerprint of the row's manifest line (``ingest.manifest.skip``), written to its record
    # "": register the url as it is; "upload": rehost the source first; "verify": an earlier run ingested it,
    # only check that the source has not changed since (nothing is uploaded or registered).
    rehost: str = ""

    def record(self, status: Status, *, run_id: str, **fields: Any) -> Result:
        """This item's final record: its key, place (manifest, line, index), body and body hash, and ``fields``."""
        return Result(
            self.key,
            self.manifest,
            self.line,
            status,
            self.body,
            body_sha256=self.body_sha256,
            index=self.index,
            run_id=run_id,
            **fields,
        )


def url_host(url: str) -> str:
    """The URL's host as a browser reads it (``ingest.admission.hosts``), for messages."""
    return whatwg_host(url) or "(none)"


@dataclass(frozen=True, slots=True)
class Rules:
    """Everything that decides a row's verdict besides the row and the results file: ``ingest run``,
    ``ingest run --dry-run`` and ``ingest validate`` build their ``Admission`` from one of these, so that the three
    make the same decision for every row."""

    keys: KeyDeriver = field(default_factory=KeyDeriver)
    retry_failed: bool = False
    require_fal_host: bool = False
    shard: Shard | None = None

    def admission(self, index: ResumeIndex | None = None, *, run_id: str = "") -> Admission:
        """A fresh ``Admission`` under these rules, over ``index`` (what earlier runs settled)."""
        return Admission(
            keys=self.keys,
            index=index if index is not None else ResumeIndex(),
            retry_failed=self.retry_failed,
            require_fal_host=self.require_fal_host,
            run_id=run_id,
            shard=self.shard,
        )


@dataclass(slots=True)
class Admission:
    """Routes rows; keeps this run's first occurrence of every key to detect duplicates."""

    keys: KeyDeriver
    index: ResumeIndex = field(default_factory=ResumeIndex)
    retry_failed: bool = False
    require_fal_host: bool = False
    run_id: str = ""
    shard: Shard | None = None
    rehost_mode: str = "never"  # --rehost: "auto" (what is not on fal), "always", or "never"
    seen: SeenKeys = field(default_factory=SeenKeys)  # this run's first occurrence of every key, exact
    manifests: dict[str, int] = field(default_factory=dict)  # manifest name -> its number in `seen` records
    warned_hosts: set[str] = field(default_factory=set)  # manifests already warned about non-fal hosts
    row_fps: dict[int, int] | None = None  # line -> line fingerprint of the manifest being read (LineSkip.fps)

    def __repr__(self) -> str:
        return f"Admission(seen={self.seen!r}, index={self.index!r})"

    def admit(self, row: ManifestRow) -> WorkItem | Result | Verdict:
        """See the module docstring."""
        shard = self.shard
        # A line's fingerprint stands for the line only when the line made one item (index None)
        row_fp = self.row_fps.pop(row.line, 0) if self.row_fps is not None else 0
        row_fp = row_fp if row.index is None else 0
        if row.request is None:
            if shard is not None and not shard.owns_line(row.line):
                return Verdict.OTHER_SHARD
            return self._invalid(row)
        body = row.request.body()
        key = self.keys.derive(body, row.idempotency_key)
        if shard is not None and not shard.owns_key(key):
            return Verdict.OTHER_SHARD
        on_fal = is_fal_host(row.request.url)  # once a row: a WHATWG host parse
        rehost = self._rehost(row.request.url, on_fal)
        if not rehost and not on_fal and (problem := self._host_problem(row)) is not None:
            return problem
        body_bytes = canonical_bytes(body)
        sha = body_sha256(body_bytes)
        fp = fingerprint(key)
        verdict = self.index.decide_fp(fp, sha, retry_failed=self.retry_failed)
        if verdict is Verdict.SKIP_DONE and rehost:
            return WorkItem(row.manifest, row.line, key, body, body_bytes, sha, row.index, rehost="verify")
        if verdict in (Verdict.SKIP_DONE, Verdict.SKIP_FAILED):
            # Settled by an earlier run, which already recorded any repeat of it as a duplicate.
            return verdict
        if (duplicate := self._duplicate(row, key, fp, body, sha)) is not None:
            return duplicate
        if verdict is Verdict.CHANGED:
            return self._changed(row, key, body, sha)
        if rehost:
            # No line fingerprint: a rerun must read the row to check that its source did not change since the upload
            return WorkItem(row.manifest, row.line, key, body, body_bytes, sha, row.index, rehost="upload")
        return WorkItem(row.manifest, row.line, key, body, body_bytes, sha, row.index, row_fp)

    def _rehost(self, url: str, on_fal: bool) -> bool:
        """Whether ``url`` (``on_fal``: a fal host) has its media uploaded into fal storage before it is registered."""
        is_http = url[:8].lower().startswith(("http://", "https://"))
        if self.rehost_mode == "always":
            return True
        if self.rehost_mode == "auto":
            # --require-fal-host: another http host is an invalid row, not something to copy in
            return not is_http or (not self.require_fal_host and not on_fal)
        return False

    def _invalid(self, row: ManifestRow) -> Result:
        assert row.error is not None
        log.warning(
            "row.invalid", manifest=row.manifest, line=row.line, field=row.error.field, reason=row.error.message
        )
        item = dict(row.raw) if row.raw is not None else None
        error = error_dict("invalid_row", row.error.message, retryable=False, field=row.error.field)
        return Result(
            row.idempotency_key,
            row.manifest,
            row.line,
            Status.INVALID,
            item,
            error=error,
            run_id=self.run_id,
            index=row.index,
        )

    def _host_problem(self, row: ManifestRow) -> Result | None:
        """A row whose url is not on a fal host: a warning once a manifest, or invalid with --require-fal-host."""
        assert row.request is not None
        host = url_host(row.request.url)
        if not self.require_fal_host:
            if row.manifest not in self.warned_hosts:
                self.warned_hosts.add(row.manifest)
                log.warning(
                    "manifest.non_fal_host",
                    manifest=row.manifest,
                    line=row.line,
                    host=host,
                    hint="the API ingests fal-hosted media; --require-fal-host makes this an error",
                )
            return None
        message = f"URL host {host!r} is not a fal media host (--require-fal-host)"
        log.warning("row.invalid", manifest=row.manifest, line=row.line, field="url", reason=message)
        error = error_dict("invalid_row", message, retryable=False, field="url")
        return Result(
            row.idempotency_key,
            row.manifest,
            row.line,
            Status.INVALID,
            row.request.body(),
            error=error,
            run_id=self.run_id,
            index=row.index,
        )

    def _duplicate(self, row: ManifestRow, key: str, fp: int, body: dict[str, Any], sha: str) -> Result | None:
        body_fp = int(sha[:16], 16)
        number = self.manifests.setdefault(row.manifest, len(self.manifests))
        first = self.seen.first(key, fp, manifest=number, line=row.line, body=body_fp)
        if first is None:
            return None
        manifest = list(self.manifests)[first.manifest]
        duplicate_of = {"manifest": manifest, "line": first.line}
        if first.body == body_fp:
            log.info("item.duplicate", manifest=row.manifest, line=row.line, duplicate_of=duplicate_of)
            return Result(
                key,
                row.manifest,
                row.line,
                Status.DUPLICATE,
                body,
                body_sha256=sha,
                duplicate_of=duplicate_of,
                run_id=self.run_id,
                index=row.index,
            )
        message = (
            f"same idempotency key as {manifest} line {first.line} but a different body: "
            "one item cannot have two versions (fix one row, or widen key_fields)"
        )
        log.warning("row.invalid", manifest=row.manifest, line=row.line, field=None, reason=message)
        error = error_dict("duplicate_conflict", message, retryable=False)
        return Result(
            key,
            row.manifest,
            row.line,
            Status.INVALID,
            body,
            body_sha256=sha,
            error=error,
            duplicate_of=duplicate_of,
            run_id=self.run_id,
            index=row.index,
        )

    def _changed(self, row: ManifestRow, key: str, body: dict[str, Any], sha: str) -> Result:
        message = (
            "row changed since it was ingested (its key has a succeeded record with another body in the results "
            "file); not re-uploaded. To ingest the new version as a new asset, set key_namespace or an explicit "
            "idempotency_key"
        )
        log.warning("item.changed", manifest=row.manifest, line=row.line, key=key)
        error = error_dict("changed_since_ingested", message, retryable=False)
        return Result(
            key,
            row.manifest,
            row.line,
            Status.INVALID,
            body,
            body_sha256=sha,
            error=error,
            run_id=self.run_id,
            index=row.index,
        )
