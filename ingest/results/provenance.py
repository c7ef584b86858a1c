"""Does a results file belong to this run's manifests and key settings? And is an earlier one elsewhere?

A results file's ``run_started`` records (``ingest.results.runlog``) name the manifests and key settings it was
made for. ``foreign`` lists what does not match: a manifest none of its runs read (by path, or by the fingerprint
of its first bytes — a renamed or moved manifest, or one that grew at the end, still matches), or other key
settings (every key would differ, so everything would be sent again). A manifest whose first items the file
already knows (``ingest failed``'s rerun manifest) belongs, whatever its name. ``elsewhere`` looks for the results file
of an earlier run of the same manifests beside the manifests and the results file: a fresh results file whose
items were done in another one resends everything (exactly once only while the server remembers the keys).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from ingest.manifest.remote import display_name, is_remote, read_head
from ingest.results.runlog import HEAD_BYTES, RUN_RECORD_PREFIX, RUN_STARTED, RunHistory

__all__ = ["elsewhere", "foreign", "same_manifest"]

MAX_CANDIDATES = 200  # results files looked at by ``elsewhere``, per directory
MAX_FIRST_LINE = 1 << 20  # bytes of a candidate's first line read


def same_manifest(
    path: str,
    recorded: dict[str, Any],
    heads: dict[str, bytes | None] | None = None,
    *,
    ca_bundle: str | None = None,
) -> bool:
    """Whether the manifest at ``path`` is the one ``recorded`` (same path, or same first bytes; a URL by its
    name without the query, so a re-signed URL of the same object is the same manifest). ``heads`` keeps a
    remote manifest's first bytes between calls, so that it is fetched once, not once per candidate;
    ``ca_bundle`` is the CAs an https manifest's server is trusted by (``--ca-bundle``)."""
    remote = is_remote(path)
    if recorded.get("path") == (display_name(path) if remote else path):
        return True
    size, digest = recorded.get("size"), recorded.get("head_sha256")
    if not isinstance(size, int) or not isinstance(digest, str) or path == "-":
        return False
    want = min(size, HEAD_BYTES)
    if remote:
        memo = heads if heads is not None else {}
        if path not in memo:
            got = read_head(path, HEAD_BYTES, ca_bundle=ca_bundle)
            memo[path] = None if got is None else got[1]
        head = (memo[path] or b"")[:want]
    else:
        try:
            with Path(path).open("rb") as handle:
                head = handle.read(want)
        except OSError:
            return False
    return len(head) == want and hashlib.sha256(head).hexdigest() == digest


def foreign(
    history: RunHistory,
    manifests: Sequence[str],
    key_settings: dict[str, Any],
    *,
    known: Callable[[str], bool] = lambda path: False,
    ca_bundle: str | None = None,
) -> list[str]:
    """Why the results file of ``history`` was made for other manifests or key settings (empty: it was not).

    ``known(path)`` says whether the file already knows some of the manifest's items (a manifest ``ingest failed``
    wrote from this very file is not foreign, whatever its name). ``ca_bundle``: as for ``same_manifest``."""
    if not history.started:
        return []
    problems = []
    recorded = history.manifests()
    names = ", ".join(sorted({str(m.get("path")) for m in recorded})) or "none recorded"
    heads: dict[str, bytes | None] = {}
    for path in manifests:
        if path == "-" or any(same_manifest(path, m, heads, ca_bundle=ca_bundle) for m in recorded):
            continue
        if not known(path):
            problems.append(f"manifest {path} is not one this results file was made for ({names})")
    before = history.key_settings()
    if before is not None and before != key_settings:
        problems.append(
            f"key settings differ from the last run's ({_keys(before)} then, {_keys(key_settings)} now): every "
            "item gets another key"
        )
    return problems


def elsewhere(results: Path, manifests: Sequence[str], *, ca_bundle: str | None = None) -> Path | None:
    """Another results file, beside ``results`` or a manifest, whose first run read one of ``manifests``
    (``ca_bundle``: as for ``same_manifest``)."""
    directories = dict.fromkeys([results.parent, *(Path(m).parent for m in manifests if m != "-" and not is_remote(m))])
    heads: dict[str, bytes | None] = {}
    for directory in directories:
        for candidate in _candidates(directory, results):
            first = _first_run(candidate)
            if first is None:
                continue
            recorded = [m for m in first.get("manifests") or [] if isinstance(m, dict)]
            pairs = ((path, m) for path in manifests if path != "-" for m in recorded)
            if any(same_manifest(path, m, heads, ca_bundle=ca_bundle) for path, m in pairs):
                return candidate
    return None


def _candidates(directory: Path, results: Path) -> Iterable[Path]:
    try:
        found = sorted(p for p in directory.glob("*.jsonl") if p.is_file() and p.resolve() != results.resolve())
    except OSError:
        return []
    return itertools.islice(found, MAX_CANDIDATES)


def _first_run(path: Path) -> dict[str, Any] | None:
    """The ``run_started`` record on a results file's first line, if it has one."""
    try:
        with path.open("rb") as handle:
            start = handle.read(len(RUN_RECORD_PREFIX))  # a manifest beside it is not read any further
            if start != RUN_RECORD_PREFIX:
                return None
            line = start + handle.readline(MAX_FIRST_LINE)
    except OSError:
        return None
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and record.get("record") == RUN_STARTED else None


def _keys(settings: dict[str, Any]) -> str:
    fields = ",".join(settings.get("key_fields") or [])
    namespace = settings.get("key_namespace")
    return f"key_fields={fields}" + (f" key_namespace={namespace}" if namespace else "")
