"""Skipping rows an earlier run finished, by their bytes, before any JSON or CSV decoding (issue 13).

``LineSkip`` sits between the manifest's bytes and the format's reader. For every line that is a whole row on its
own (any JSONL line; a CSV line at a record boundary holding an even number of quotes, the header excluded) it
computes a 64-bit fingerprint of ``salt`` and the line's bytes without their ending. A fingerprint in ``done`` (the
results file's ``row_fp`` of succeeded records) means the very same bytes, read with the very same settings, were
ingested: the line is dropped and counted, never parsed. Every other line goes on to the reader, and the
fingerprints of the lines that went on are kept by line number (``fps``) so that the row built from that line can
carry its fingerprint into its record.

``salt`` covers everything that turns a line into a key and a body (format, manifest options, key settings); for
CSV the header line is added to it, since the same cells under another header are another row. A fingerprint
collision (2⁻⁶⁴ per pair) would skip a row wrongly; at 10⁷ done rows and 10⁷ new ones that is odds of 1 in 10⁵.

Blocks (``read``): the bytes are read in blocks of whole lines (the first ``FIRST_BLOCK`` bytes, then ``BLOCK``
bytes each, each extended to the end of its last line), so their bounds depend only on the bytes before them. A
block whose every line is blank or a row skipped as done, starting and ending outside a quoted field and after the
CSV header, is *finished*: its digest (SHA-256 of ``salt`` and its bytes, 128 bits) goes into ``blocks`` with the
number of rows in it, and the results index keeps it (``ingest.results.snapshot``). A later read that meets a block
with a finished digest, in the same state, skips it whole — its lines would all have been skipped one by one, since
the same bytes under the same salt give the same fingerprints and done rows stay done — so a rerun with nothing left
costs one hash of the file instead of one per line. Any changed byte changes its block's digest: that block is read
line by line as above. A run also tells ``record`` of the blocks it reads whose rows all carry a fingerprint, so that
its end can add those whose rows all succeeded (``ingest.results.livefold``): the first rerun after a run skips
blocks whole too, instead of checking every line.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Iterable, Iterator

from ingest.errors import ManifestError
from ingest.keytable import fingerprint_bytes
from ingest.manifest.lines import ByteStream, Line, content_length, skip_rest_of_line

MAX_PENDING = 1 << 13  # fingerprints kept for rows not yet admitted (a reader runs ahead by one batch)
FIRST_BLOCK = 1 << 14  # bytes of the first block (it holds the CSV header, which is read line by line)
BLOCK = 1 << 20  # bytes of every later block, before it is extended to the end of its last line
DIGEST_BYTES = 16

# (digest, fingerprints of the block's lines that went on to the reader, rows in it skipped as done)
BlockRecorder = Callable[[bytes, list[int], int], None]


class LineSkip:
    """A filter over one manifest's physical lines; see the module docstring."""

    __slots__ = ("_block_fps", "_done", "_header", "_inside", "_whole", "blocks", "fps", "record", "salt", "skipped")

    def __init__(
        self,
        salt: bytes,
        done: Callable[[int], bool] | None,
        blocks: dict[bytes, int] | None = None,
        record: BlockRecorder | None = None,
    ) -> None:
        self.salt = salt  # settings digest (what was detected and, for CSV, the header are appended when read)
        self._done = done  # whether a fingerprint belongs to a finished row; None: skip nothing, only fingerprint
        self.blocks = blocks  # finished blocks: digest -> rows in it; found ones are skipped, new ones added
        # Told of every block read (``read``) whose every non-blank line is a row with a fingerprint: its digest,
        # the fingerprints of the lines that went on, and the rows skipped in it as done. The block is finished
        # once every one of those rows has succeeded (``ingest.results.livefold`` decides at the run's end).
        self.record = record
        self._block_fps: list[int] | None = None  # the block being read: fingerprints of the lines that went on
        self._whole = True  # the block being read: no non-blank line without a fingerprint so far
        self.fps: dict[int, int] = {}  # line number -> fingerprint, for rows on their way to admission
        self.skipped = 0  # lines dropped as done
        self._inside = False  # CSV: within a quoted field that spans lines
        self._header = False  # CSV: the header (the first non-blank line) is still to come

    def __repr__(self) -> str:
        return f"LineSkip(skipped={self.skipped}, pending={len(self.fps)})"

    def take_skipped(self) -> int:
        """Lines skipped since the last call."""
        skipped, self.skipped = self.skipped, 0
        return skipped

    def filter(self, lines: Iterable[Line], *, csv: bool, context: bytes = b"") -> Iterator[Line]:
        """The lines the reader must still see; ``csv``: delimited text with a header and quoting; ``context``: what
        was detected about the file (encoding, delimiter), part of the salt."""
        self.salt += b"\n" + context
        self._header = csv
        return self._filter(lines, csv=csv)

    def read(self, stream: ByteStream, *, csv: bool, context: bytes, max_line_bytes: int, name: str) -> Iterator[Line]:
        """``filter`` over the physical lines of ``stream`` (as ``ingest.manifest.lines.physical_lines`` reads
        them), skipping finished blocks whole; see the module docstring."""
        self.salt += b"\n" + context
        self._header = csv
        number, record = 0, self.record
        try:
            for block, overlong_tail in _blocks(stream, max_line_bytes):
                clean = not (self._inside or self._header)
                blocks = self.blocks if clean and self._done is not None else None
                recording = clean and record is not None
                digest = _digest(self.salt, block) if blocks is not None or recording else b""
                if blocks is not None and (rows := blocks.get(digest)) is not None:
                    self.skipped += rows
                    number += block.count(b"\n") + (not block.endswith(b"\n"))
                    continue
                before, shown = self.skipped, 0
                self._block_fps, self._whole = ([] if recording else None), True
                for line in self._filter(_numbered(block, number, max_line_bytes, overlong_tail), csv=csv):
                    shown += line[1] is None or bool(line[1].strip())
                    yield line
                number += block.count(b"\n") + (not block.endswith(b"\n"))
                if overlong_tail:
                    skip_rest_of_line(stream)
                if blocks is not None and not shown and not self._inside:
                    blocks[digest] = self.skipped - before
                elif record is not None and self._block_fps is not None and self._whole and not self._inside:
                    record(digest, self._block_fps, self.skipped - before)
                self._block_fps = None
        except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
            raise ManifestError(f"{name}: cannot be read after line {number} ({exc})") from exc

    def _filter(self, lines: Iterable[Line], *, csv: bool) -> Iterator[Line]:
        done, fps, salt = self._done, self.fps, self.salt
        for number, data in lines:
            if data is None or not data.strip():
                self._whole = self._whole and data is not None
                yield number, data
                continue
            if csv and (self._inside or self._header or data.count(b'"') & 1):
                self._whole = False
                self._inside ^= bool(data.count(b'"') & 1)
                if self._header and not self._inside:
                    self._header = False
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
            if self._block_fps is not None:
                self._block_fps.append(fp)
            yield number, data


def _digest(salt: bytes, block: bytes) -> bytes:
    hasher = hashlib.sha256(salt)
    hasher.update(b"\n")
    hasher.update(block)
    return hasher.digest()[:DIGEST_BYTES]


def _blocks(stream: ByteStream, max_line_bytes: int) -> Iterator[tuple[bytes, bool]]:
    """Blocks of whole lines, and whether the last line of the block goes on past ``max_line_bytes`` (the rest of
    it is still in the stream, to be skipped)."""
    limit = max_line_bytes + 2  # as physical_lines: room for the longest allowed line plus "\r\n"
    size = FIRST_BLOCK
    while True:
        block = stream.read(size)
        while block and len(block) < size and (more := stream.read(size - len(block))):
            block += more  # a short read (a pipe, a decoder) must not move the bounds
        if not block:
            return
        overlong = False
        if not block.endswith(b"\n"):
            rest = stream.readline(limit)
            overlong = len(rest) == limit and not rest.endswith(b"\n")
            block += rest
        yield block, overlong
        size = BLOCK


def _numbered(block: bytes, number: int, max_line_bytes: int, overlong_tail: bool) -> Iterator[Line]:
    """The lines of ``block`` as ``physical_lines`` yields them, numbered on from ``number``."""
    if b"\r" in block:  # splitlines would end a line at a lone \r too
        parts = block.split(b"\n")
        tail = parts.pop()
        lines = [part + b"\n" for part in parts]
        if tail:
            lines.append(tail)
    else:
        lines = block.splitlines(keepends=True)
    last = len(lines) - 1
    for offset, data in enumerate(lines):
        too_long = (offset == last and overlong_tail) or (
            len(data) > max_line_bytes and content_length(data) > max_line_bytes
        )
        yield number + offset + 1, None if too_long else data
