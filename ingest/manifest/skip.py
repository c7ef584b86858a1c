"""Skipping rows an earlier run finished, by their bytes, before any JSON or CSV decoding (issue 13).

``LineSkip`` sits between the physical lines and the format's reader. For every line that is a whole row on its
own (any JSONL line; a CSV line at a record boundary holding an even number of quotes, the header excluded) it
computes a 64-bit fingerprint of ``salt`` and the line's bytes without their ending. A fingerprint in ``done`` (the
results file's ``row_fp`` of succeeded records) means the very same bytes, read with the very same settings, were
ingested: the line is dropped and counted, never parsed. Every other line goes on to the reader, and the
fingerprints of the lines that went on are kept by line number (``fps``) so that the row built from that line can
carry its fingerprint into its record.

``salt`` covers everything that turns a line into a key and a body (format, manifest options, key settings); for
CSV the header line is added to it, since the same cells under another header are another row. A fingerprint
collision (2⁻⁶⁴ per pair) would skip a row wrongly; at 10⁷ done rows and 10⁷ new ones that is odds of 1 in 10⁵.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ingest.keytable import fingerprint_bytes
from ingest.manifest.lines import Line

MAX_PENDING = 1 << 13  # fingerprints kept for rows not yet admitted (a reader runs ahead by one batch)


class LineSkip:
    """A filter over one manifest's physical lines; see the module docstring."""

    __slots__ = ("_done", "fps", "salt", "skipped")

    def __init__(self, salt: bytes, done: Callable[[int], bool] | None) -> None:
        self.salt = salt  # settings digest (what was detected and, for CSV, the header are appended when read)
        self._done = done  # whether a fingerprint belongs to a finished row; None: skip nothing, only fingerprint
        self.fps: dict[int, int] = {}  # line number -> fingerprint, for rows on their way to admission
        self.skipped = 0  # lines dropped as done

    def __repr__(self) -> str:
        return f"LineSkip(skipped={self.skipped}, pending={len(self.fps)})"

    def take_skipped(self) -> int:
        """Lines skipped since the last call."""
        skipped, self.skipped = self.skipped, 0
        return skipped

    def filter(self, lines: Iterator[Line], *, csv: bool, context: bytes = b"") -> Iterator[Line]:
        """The lines the reader must still see; ``csv``: delimited text with a header and quoting; ``context``: what
        was detected about the file (encoding, delimiter), part of the salt."""
        done, fps = self._done, self.fps
        salt = self.salt = self.salt + b"\n" + context
        inside = False  # CSV: within a quoted field that spans lines
        header = csv  # CSV: the first non-blank line is the header
        for number, data in lines:
            if data is None or not data.strip():
                yield number, data
                continue
            if csv and (inside or header or data.count(b'"') & 1):
                inside ^= bool(data.count(b'"') & 1)
                if header and not inside:
                    header = False
                    salt = self.salt = salt + b"\n" + data.rstrip(b"\r\n")
                yield number, data
                continue
            fp = fingerprint_bytes(salt + data.rstrip(b"\r\n"))
            if done is not None and done(fp):
                self.skipped += 1
                continue
            if len(fps) >= MAX_PENDING:
                fps.clear()  # nobody takes them (no admission reads this manifest): forget, never grow
            fps[number] = fp
            yield number, data
