"""How results files are named: the one home of the rule (the CLI's default, ``--processes`` shards, resume).

A job's results live in a *family*: a base file ``x.results.jsonl`` and any shard files beside it,
``x.results.shard-K-of-N.jsonl`` (written by ``--shard K/N`` or ``--processes N``). A run resumes from the whole
family, so a job may be re-run with another shard layout.
"""

from __future__ import annotations

import glob
import posixpath
import re
from pathlib import Path

from ingest.manifest.remote import is_remote, url_path

MANIFEST_SUFFIXES = (".gz", ".csv", ".tsv", ".tab", ".txt", ".list", ".urls", ".json", ".jsonl", ".ndjson")
_SHARD_TAG = re.compile(r"\.shard-\d+-of-\d+$")


def shard_tag(index: int, count: int) -> str:
    """``shard-K-of-N``: the part of a shard file's name that names its shard."""
    return f"shard-{index}-of-{count}"


def default_results_path(manifest: Path | str, shard: tuple[int, int] | None = None) -> Path:
    """``<manifest without its suffixes>.results.jsonl`` beside the manifest (``….results.shard-K-of-N.jsonl``
    for a shard); for a remote manifest (``s3://b/dir/library.csv``), ``library.results.jsonl`` in the working
    directory."""
    if isinstance(manifest, str):
        remote = is_remote(manifest)
        manifest = Path(posixpath.basename(url_path(manifest)) or "manifest") if remote else Path(manifest)
    name = manifest.name
    for suffix in MANIFEST_SUFFIXES:
        name = name.removesuffix(suffix)
    tag = f".{shard_tag(*shard)}" if shard else ""
    return manifest.with_name(f"{name}.results{tag}.jsonl")


def expand_shard_placeholder(results: Path, shard: tuple[int, int] | None) -> Path:
    """``--results`` with ``{shard}`` replaced by ``shard-K-of-N`` (``shard-0-of-1`` when not sharded)."""
    return Path(str(results).replace("{shard}", shard_tag(*shard) if shard else "shard-0-of-1"))


def shard_results_path(results: Path, index: int, count: int) -> Path:
    """``x.results.jsonl`` → ``x.results.shard-K-of-N.jsonl``."""
    return results.with_name(f"{results.stem}.{shard_tag(index, count)}{results.suffix}")


def family_base(path: Path) -> Path:
    """The base file of ``path``'s family: ``x.results.shard-K-of-N.jsonl`` → ``x.results.jsonl``."""
    return path.with_name(_SHARD_TAG.sub("", path.stem) + path.suffix)


def family(path: Path) -> list[Path]:
    """The results files that describe the same job as ``path``: its base file and every shard file beside it,
    existing ones only, ``path`` itself last."""
    stem = _SHARD_TAG.sub("", path.stem)
    base = path.with_name(stem + path.suffix)
    shards = sorted(path.parent.glob(f"{glob.escape(stem)}.shard-*-of-*{path.suffix}"))
    return [p for p in [base, *shards] if p != path and p.exists()] + [path]
