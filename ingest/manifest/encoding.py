"""Which text encoding a manifest is in, and a stream that turns it into UTF-8 bytes as it is read.

The decision, made once per manifest from a bounded prefix (``PREFIX_BYTES``) so that memory stays flat:

1. ``--encoding NAME`` forces one (``how="forced"``).
2. A byte order mark decides: UTF-8, UTF-16 LE/BE, UTF-32 LE/BE (``how="bom"``).
3. Otherwise UTF-8, when the prefix reads as UTF-8 (``how="default"``): valid, or with fewer invalid sequences
   than valid multi-byte characters (a UTF-8 file with a few corrupt bytes stays UTF-8; its bad rows are invalid),
   and not one NUL byte in eight (UTF-16 without a BOM).
4. Otherwise charset-normalizer's best guess over the prefix (``how="detected"``; the reader warns once, naming it
   and ``--encoding``). Without a guess, UTF-8, and every undecodable row is invalid.

Everything after the decision reads UTF-8 bytes: ``Utf8Stream`` decodes the source incrementally and re-encodes
it. An undecodable byte is carried through as an invalid UTF-8 byte (surrogateescape), so the row that holds it
still becomes an ``invalid`` record naming its line, as with a UTF-8 file. ``Utf8Stream`` also turns the lone
``\\r`` line ends of old Mac files (what Excel for Mac still writes) into ``\\n``, so every reader sees one kind of
line end and line numbers stay physical.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from ingest.errors import ConfigError
from ingest.manifest.lines import ByteStream

PREFIX_BYTES = 1 << 16  # how much of a manifest the encoding, format and delimiter decisions look at
PREFERRED = "cp1252"  # among guesses that tie, the one Excel writes on Western systems
READ_CHUNK = 1 << 16  # source bytes decoded per refill of a Utf8Stream

# Longest first: the UTF-32 LE mark begins with the UTF-16 LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


@dataclass(frozen=True, slots=True)
class Encoding:
    """The encoding chosen for a manifest: its codec name, how it was chosen, and the BOM length to skip."""

    name: str
    how: str  # "forced", "bom", "default" or "detected"
    bom: int = 0

    @property
    def is_utf8(self) -> bool:
        return codecs.lookup(self.name).name == "utf-8"


def check_encoding_name(name: str) -> str:
    """``name`` if Python knows the codec, else ``ConfigError``."""
    try:
        codecs.lookup(name)
    except LookupError:
        raise ConfigError(f"encoding: unknown encoding {name!r} (e.g. utf-8, cp1252, utf-16, latin-1)") from None
    return name


def choose_encoding(prefix: bytes, forced: str | None = None) -> Encoding:
    """See the module docstring; ``prefix`` is the first ``PREFIX_BYTES`` (or fewer) of the decompressed file."""
    bom = next(((mark, name) for mark, name in _BOMS if prefix.startswith(mark)), None)
    if forced is not None:
        skip = len(bom[0]) if bom is not None and codecs.lookup(bom[1]) == codecs.lookup(forced) else 0
        return Encoding(forced, "forced", skip)
    if bom is not None:
        return Encoding(bom[1], "bom", len(bom[0]))
    if prefix.count(b"\0") * 8 <= len(prefix) and _reads_as_utf8(prefix):
        return Encoding("utf-8", "default")
    guess = _detect(prefix)
    return Encoding(guess, "detected") if guess is not None else Encoding("utf-8", "default")


def _reads_as_utf8(prefix: bytes) -> bool:
    if prefix.isascii():
        return True
    text = codecs.getincrementaldecoder("utf-8")("replace").decode(prefix, final=False)  # may end mid-character
    invalid = text.count("\ufffd")
    valid = sum(1 for ch in text if ord(ch) > 0x7F) - invalid
    return invalid == 0 or 0 < invalid <= valid


def _detect(prefix: bytes) -> str | None:
    from charset_normalizer import from_bytes  # imported here: only non-UTF-8 files pay for it

    matches = from_bytes(prefix)
    best = matches.best()
    if best is None:
        return None
    # On a short sample several code pages tie (cp1250 and cp1252 both read "é" with no chaos); Excel's Western
    # default, cp1252, is by far the likeliest of them for a manifest.
    tied = [m for m in matches if (m.chaos, m.coherence) == (best.chaos, best.coherence)]
    if any(m.encoding == PREFERRED or PREFERRED in m.could_be_from_charset for m in tied):
        return PREFERRED
    name = best.encoding
    return "utf-8" if codecs.lookup(name).name == "utf-8" else name


def _escape_bad_bytes(exc: UnicodeError) -> tuple[str, int]:
    """Decode error handler: each bad byte becomes a lone surrogate that re-encodes to an invalid UTF-8 byte."""
    assert isinstance(exc, UnicodeDecodeError)
    bad = exc.object[exc.start : exc.end]
    return "".join(chr(0xDC00 + (b if b >= 0x80 else 0x80)) for b in bad), exc.end


codecs.register_error("ingest-escape", _escape_bad_bytes)


class Utf8Stream:
    """``read``/``readline`` over ``source`` decoded from ``encoding``, as UTF-8 bytes with ``\\n`` line ends."""

    __slots__ = ("_buffer", "_cr_pending", "_decoder", "_eof", "_source", "_translate_cr")

    def __init__(self, source: ByteStream, encoding: Encoding, *, translate_cr: bool) -> None:
        self._source = source  # the manifest's raw (decompressed) bytes, positioned after the BOM
        self._decoder = codecs.getincrementaldecoder(encoding.name)("ingest-escape")
        self._buffer = bytearray()  # UTF-8 output not handed out yet
        self._eof = False  # the source is exhausted and the decoder flushed
        self._translate_cr = translate_cr  # a lone "\r" ends a line (CR-only files)
        self._cr_pending = False  # the last decoded text ended in "\r": wait for the next chunk to tell "\r\n"

    def __repr__(self) -> str:
        return f"Utf8Stream(buffered={len(self._buffer)}, eof={self._eof})"

    def read(self, size: int = -1, /) -> bytes:
        while not self._eof and (size < 0 or len(self._buffer) < size):
            self._refill()
        return self._take(len(self._buffer) if size < 0 else min(size, len(self._buffer)))

    def readline(self, size: int = -1, /) -> bytes:
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end >= 0:
                return self._take(end + 1 if size < 0 else min(end + 1, size))
            if 0 <= size <= len(self._buffer) or self._eof:
                return self._take(len(self._buffer) if size < 0 else min(size, len(self._buffer)))
            start = len(self._buffer)
            self._refill()

    def _take(self, count: int) -> bytes:
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    def _refill(self) -> None:
        chunk = self._source.read(READ_CHUNK)
        text = self._decoder.decode(chunk, final=not chunk)
        if not chunk:
            self._eof = True
        if self._translate_cr:
            text = self._lone_cr_to_lf(text)
        self._buffer += text.encode("utf-8", "surrogateescape")

    def _lone_cr_to_lf(self, text: str) -> str:
        if self._cr_pending:
            text = "\r" + text
        self._cr_pending = text.endswith("\r") and not self._eof
        if self._cr_pending:
            text = text[:-1]
        return text.replace("\r\n", "\n").replace("\r", "\n")


class PrefixedStream:
    """``read``/``readline`` over bytes already taken from ``rest`` (the peeked ``prefix``), then ``rest`` itself:
    how stdin, which cannot seek back, is read after its first bytes were looked at."""

    __slots__ = ("_prefix", "_rest")

    def __init__(self, prefix: bytes, rest: ByteStream) -> None:
        self._prefix = prefix  # peeked bytes not handed out yet
        self._rest = rest

    def read(self, size: int = -1, /) -> bytes:
        if not self._prefix:
            return self._rest.read(size)
        if size < 0:
            data, self._prefix = self._prefix + self._rest.read(), b""
            return data
        data, self._prefix = self._prefix[:size], self._prefix[size:]
        return data

    def readline(self, size: int = -1, /) -> bytes:
        if not self._prefix:
            return self._rest.readline(size)
        end = self._prefix.find(b"\n")
        if end >= 0 and (size < 0 or end < size):
            data, self._prefix = self._prefix[: end + 1], self._prefix[end + 1 :]
            return data
        if 0 <= size <= len(self._prefix):
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            return data
        data, self._prefix = self._prefix, b""
        return data + self._rest.readline(-1 if size < 0 else size - len(data))
