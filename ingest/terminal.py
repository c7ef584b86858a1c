"""Text for a person's terminal: server- and manifest-supplied strings must not drive it.

An error message from a server, or a manifest cell, may hold escape sequences: a window title (OSC 0), a cleared
screen (CSI 2J), an OSC 8 link that shows one URL and opens another, an OSC 52 write to the clipboard. Everything
``ingest`` prints for a person passes ``for_terminal``, which writes C0 and C1 control characters (newline and tab
excepted), DEL, and the Unicode bidi controls that reorder what is shown as visible ``\\xNN`` / ``\\uNNNN`` escapes.
JSON output is for machines and is left alone (JSON already escapes C0 controls).
"""

from __future__ import annotations

import re

_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def for_terminal(text: str) -> str:
    """``text`` with every character that could drive a terminal made visible (see the module docstring)."""
    return _UNSAFE.sub(_escape, text) if _UNSAFE.search(text) else text


def human_size(value: float) -> str:
    """A byte count as a person reads it: ``1.5 GiB``, ``320.0 KiB``, ``12 B`` (powers of 1024)."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= scale:
            return f"{value / scale:,.1f} {unit}"
    return f"{value:,.0f} B"
