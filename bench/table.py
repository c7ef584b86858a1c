"""The benchmark's results: a ``Row`` per figure, rendered as one aligned plain-text table and as JSON."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

COLUMNS = ("row", "setting", "ingest / measured", "baseline", "ratio", "target", "met")


@dataclass(frozen=True, slots=True)
class Stat:
    """One figure over several rounds: its median and spread."""

    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        return cls(tuple(float(v) for v in values))

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def render(self, fmt: str) -> str:
        """``median (min–max)``, or just the value when there was one round."""
        med = format(self.median, fmt)
        if len(self.values) < 2:
            return med
        return f"{med} ({format(min(self.values), fmt)}–{format(max(self.values), fmt)})"

    def to_json(self) -> dict[str, Any]:
        return {"median": self.median, "min": min(self.values), "max": max(self.values), "values": list(self.values)}


@dataclass(slots=True)
class Row:
    """One line of the table. ``measured`` is ingest's figure unless the row is a peer's or says otherwise."""

    section: str  # throughput, cpu, latency, rate, memory, resume, peers
    name: str  # what is measured, e.g. "items/s"
    setting: str  # e.g. "C=64 N=20000"
    fmt: str  # format spec of the figures, e.g. ",.0f"
    measured: Stat | None = None
    baseline: Stat | None = None
    baseline_name: str = ""  # e.g. "bare aiohttp"
    ratio: float | None = None  # the headline comparison (see ratio_of)
    ratio_of: str = ""  # what ratio means, e.g. "ingest/bare", "of C/latency"
    target: str = ""  # the target, in words
    met: bool | None = None  # whether the target is met (None: no target)
    note: str = ""  # "not installed", "timed out", extra figures
    extra: dict[str, Any] = field(default_factory=dict)  # more raw figures for the JSON file

    def cells(self) -> tuple[str, ...]:
        measured = self.measured.render(self.fmt) if self.measured else (self.note or "—")
        baseline = f"{self.baseline.render(self.fmt)} {self.baseline_name}".strip() if self.baseline else "—"
        ratio = f"{self.ratio:.3f} {self.ratio_of}".strip() if self.ratio is not None else "—"
        met = "—" if self.met is None else ("yes" if self.met else "NO")
        return (f"{self.section}: {self.name}", self.setting, measured, baseline, ratio, self.target or "—", met)

    def to_json(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "name": self.name,
            "setting": self.setting,
            "measured": self.measured.to_json() if self.measured else None,
            "baseline": self.baseline.to_json() if self.baseline else None,
            "baseline_name": self.baseline_name,
            "ratio": self.ratio,
            "ratio_of": self.ratio_of,
            "target": self.target,
            "met": self.met,
            "note": self.note,
            "extra": self.extra,
        }


def render(rows: Sequence[Row], header: Sequence[str] = ()) -> str:
    """The rows as one aligned table, preceded by ``header`` lines; notes of measured rows follow the table."""
    body = [COLUMNS, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in body) for i in range(len(COLUMNS))]
    rule = "  ".join("-" * width for width in widths)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    out = [*header, line(COLUMNS), rule]
    previous = None
    for row, cells in zip(rows, body[1:], strict=True):
        if previous is not None and row.section != previous:
            out.append("")
        out.append(line(cells))
        previous = row.section
    notes = [f"  {row.section}: {row.name} {row.setting}: {row.note}" for row in rows if row.measured and row.note]
    if notes:
        out += ["", "notes:", *notes]
    return "\n".join(out)
