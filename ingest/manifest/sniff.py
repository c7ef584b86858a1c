"""Guesses made from a manifest's first bytes: its format, its delimiter, its line ends. Pure functions.

- Format: from the name (``.csv``, ``.tsv``, ``.jsonl``/``.ndjson``, ``.json``; ``.txt``/``.list``/``.urls`` and
  stdin by content), else by content: ``[`` starts a JSON array, ``{`` a JSONL file (or, when the first line does
  not close the object, one JSON document), a first line that is one ``http(s)://`` URL a URL list, anything
  else delimited text.
- Delimiter: the one of ``,`` ``;`` tab ``|`` that occurs most often in the header line outside quotes (ties in
  that order); ``,`` when none occurs (a single-column file).
- Line ends: ``cr`` when the text has ``\\r`` but no ``\\n`` (old Mac files), else ``lf`` or ``crlf``.
"""

from __future__ import annotations

from typing import Literal

Format = Literal["csv", "tsv", "jsonl", "json", "urls"]
FORMATS: tuple[str, ...] = ("csv", "tsv", "jsonl", "json", "urls")
DELIMITERS = (",", ";", "\t", "|")
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}

_BY_SUFFIX: dict[str, Format | None] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".txt": None,  # by content: a URL list or delimited text (Excel's "Unicode Text" is a .txt)
    ".list": None,
    ".urls": None,
}


def format_from_name(path: str) -> tuple[bool, Format | None]:
    """(whether the suffix is known, the format it names; ``None`` when the content decides)."""
    lowered = path.lower().removesuffix(".gz")
    for suffix, format_ in _BY_SUFFIX.items():
        if lowered.endswith(suffix):
            return True, format_
    return False, None


def format_from_content(text: str) -> Format:
    """The format the first characters of a manifest (decoded, BOM removed) suggest."""
    body = text.lstrip()
    if body.startswith("["):
        return "json"
    if body.startswith("{"):
        first = body.split("\n", 1)[0].strip()
        return "jsonl" if first.endswith("}") or "\n" not in body else "json"
    if _first_meaningful_line(text).lower().startswith(("http://", "https://")):
        line = _first_meaningful_line(text)
        if not any(ch.isspace() for ch in line) and not any(d in line for d in (",", ";", "|")):
            return "urls"
    return "csv"


def sniff_delimiter(header: str) -> str:
    """The delimiter of ``header`` (its first line): see the module docstring."""
    counts = dict.fromkeys(DELIMITERS, 0)
    quoted = False
    for ch in header:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in counts:
            counts[ch] += 1
    best = max(DELIMITERS, key=lambda d: (counts[d], -DELIMITERS.index(d)))
    return best if counts[best] else ","


def line_ends(text: str) -> str:
    """``cr``, ``crlf`` or ``lf``: how the lines of ``text`` end."""
    if "\n" not in text:
        return "cr" if "\r" in text else "lf"
    return "crlf" if "\r\n" in text else "lf"


def first_line(text: str) -> str:
    """The first non-blank line of ``text`` (the header of a delimited file)."""
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if line.strip():
            return line
    return ""


def _first_meaningful_line(text: str) -> str:
    """The first line that is neither blank nor a ``#`` comment, stripped."""
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return stripped
    return ""
