"""Files a test writes and reads: small manifests, results files, and the one media URL scheme of the tests."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson


def media_url(i: int, prefix: str = "t") -> str:
    """A fal-hosted media URL, unique per ``(prefix, i)``."""
    return f"https://v3b.fal.media/files/b/{prefix}/{i:06d}.png"


def media_rows(n: int, prefix: str = "t", **extra: Any) -> list[dict[str, Any]]:
    """``n`` valid manifest rows with distinct URLs."""
    return [{"url": media_url(i, prefix), "type": "image", **extra} for i in range(n)]


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any] | str]) -> Path:
    """A JSONL manifest; a ``str`` row is written verbatim (to make a broken line)."""
    with path.open("wb") as file:
        for row in rows:
            file.write((row if isinstance(row, str) else orjson.dumps(row).decode()).encode() + b"\n")
    return path


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """A CSV manifest with a header; missing cells are empty."""
    columns = list(columns or dict.fromkeys(name for row in rows for name in row))
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_results(path: Path) -> list[dict[str, Any]]:
    """Every item record of a results file (run records, ``{"record": "run_…"}``, left out: ``run_records``)."""
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    return [line for line in lines if "record" not in line]


def run_records(path: Path) -> list[dict[str, Any]]:
    """The run records (``run_started``, ``run_ended``) of a results file, in file order."""
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    return [line for line in lines if "record" in line]


def by_line(records: Iterable[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """Records by ``(manifest, line)``."""
    return {(record["manifest"], record["line"]): record for record in records}
