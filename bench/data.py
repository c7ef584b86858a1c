"""Seeded benchmark data, written fast: manifests, the baselines' requests files, and "all done" results files.

A manifest line is already the canonical request body (sorted keys, defaults left out: exactly what
``UploadRequest.body_bytes()`` produces), so the baselines can send the very bytes ``ingest`` sends, and the
results file for the resume row can be written without parsing the manifest back.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson

from ingest.admission.keys import KeyDeriver, row_salt
from ingest.manifest.options import ManifestOptions
from ingest.manifest.skip import LineSkip
from ingest.manifest.source import ManifestSource, read_manifest
from ingest.results.record import Result, Status

WRITE_CHUNK = 10_000  # lines per write
TYPES = (("png", "image"), ("jpg", "image"), ("mp4", "video"), ("mp3", "audio"), ("glb", "3d"))
PROMPTS = ("a red fox in the snow", "city skyline at dusk, long exposure", "studio portrait, soft light")
FINISHED_AT = "2026-05-23T20:00:00.000Z"  # fixed, so generated results files are byte-identical across runs


def bodies(count: int, seed: int) -> Iterator[bytes]:
    """``count`` distinct canonical request bodies; the same for the same seed."""
    rng = random.Random(seed)
    for i in range(count):
        ext, kind = TYPES[rng.randrange(len(TYPES))]
        body: dict[str, object] = {"type": kind, "url": f"https://v3b.fal.media/files/bench/{seed}/{i:08d}.{ext}"}
        if rng.random() < 0.3:
            body["prompt"] = PROMPTS[rng.randrange(len(PROMPTS))]
        yield orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def _write_lines(path: Path, lines: Iterator[bytes]) -> int:
    count = 0
    with path.open("wb") as file:
        chunk: list[bytes] = []
        for line in lines:
            chunk.append(line)
            if len(chunk) >= WRITE_CHUNK:
                file.write(b"\n".join(chunk) + b"\n")
                count += len(chunk)
                chunk = []
        if chunk:
            file.write(b"\n".join(chunk) + b"\n")
            count += len(chunk)
    return count


def write_manifest(path: Path, count: int, seed: int) -> Path:
    """A JSONL manifest of ``count`` valid, distinct items."""
    _write_lines(path, bodies(count, seed))
    return path


def _url_of(body: bytes) -> str:
    # Bodies come from ``bodies()``: the URL is the last key in sorted order, a plain string without escapes.
    return body[body.index(b'"url":"') + 7 : -2].decode()


def write_requests(path: Path, count: int, seed: int) -> Path:
    """``<key>\\t<body>`` lines for the baselines: the keys ``ingest`` derives (default settings) for the manifest."""
    namespace = KeyDeriver().namespace
    lines = (f"{uuid.uuid5(namespace, _url_of(b))}\t".encode() + b for b in bodies(count, seed))
    _write_lines(path, lines)
    return path


def write_done_results(
    path: Path, manifest: str, count: int, seed: int, asset: dict[str, object], *, fmt: str = "jsonl"
) -> Path:
    """A results file recording every item of the matching manifest (``fmt``: jsonl or csv, as written here) as
    succeeded, with the ``row_fp`` of each row's line under default settings: what a finished run leaves."""
    namespace = KeyDeriver().namespace
    row_fps = _row_fps(Path(manifest))

    def records() -> Iterator[bytes]:
        for line, body in enumerate(bodies(count, seed), start=1):
            record = Result(
                str(uuid.uuid5(namespace, _url_of(body))),
                manifest,
                line + (fmt == "csv"),
                Status.SUCCEEDED,
                orjson.loads(body),
                body_sha256=hashlib.sha256(body).hexdigest(),
                attempts=1,
                http_status=201,
                asset=asset,
                elapsed_ms=12,
                run_id="bench0000000",
                finished_at=FINISHED_AT,
                row_fp=next(row_fps),
            )
            yield record.to_line().rstrip(b"\n")

    _write_lines(path, records())
    return path


CSV_HEADER = b"url,type,prompt"


def _row_fps(manifest: Path) -> Iterator[int]:
    """The ``row_fp`` of each row of ``manifest`` under default settings, as ``ingest run`` computes them (its
    default ``--rehost auto`` reads a manifest with ``allow_sources``, which is part of the salt)."""
    options = ManifestOptions(allow_sources=True)
    skip = LineSkip(row_salt(options, KeyDeriver()), None)
    for row in read_manifest(ManifestSource.open(str(manifest)), options, skip=skip, warn=lambda *a, **k: None):
        yield skip.fps.pop(row.line, 0)


def _csv_line(body: bytes) -> bytes:
    fields = orjson.loads(body)
    prompt = fields.get("prompt", "")
    prompt = f'"{prompt}"' if "," in prompt else prompt  # the prompts hold no quotes
    return f"{fields['url']},{fields['type']},{prompt}".encode()


def write_csv_manifest(path: Path, count: int, seed: int) -> Path:
    """The CSV form of ``write_manifest``'s rows (``url,type,prompt``; an empty prompt is absent): same bodies."""

    def lines() -> Iterator[bytes]:
        yield CSV_HEADER
        yield from (_csv_line(body) for body in bodies(count, seed))

    _write_lines(path, lines())
    return path
