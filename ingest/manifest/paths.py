"""JSON paths for ``--column FIELD=SOURCE``: ``image.url``, ``images[*].url``, ``outputs[0].video.url``.

A path is dot-separated keys, each optionally followed by ``[N]`` (one element) or ``[*]`` (every element: the
record becomes one item per element). A source without ``.`` or ``[`` is a plain key (or CSV column) name, as in
``[manifest.columns]`` before paths existed. ``resolve`` is pure: it returns what the path finds, never raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ingest.errors import ConfigError

_STEP = re.compile(r"([^.\[\]]+)((?:\[(?:\*|\d+)\])*)")
_INDEX = re.compile(r"\[(\*|\d+)\]")
MISSING: Any = object()  # what a path finds where the record has nothing
EVERY = -1  # the index step of ``[*]``


def is_path(source: str) -> bool:
    """Whether ``source`` is a JSON path rather than a plain key or column name."""
    return "." in source or "[" in source


@dataclass(frozen=True, slots=True)
class JsonPath:
    """A parsed path: its text and its steps (a key as ``str``, an index as ``int``, ``[*]`` as ``EVERY``)."""

    text: str
    steps: tuple[str | int, ...]

    @property
    def explodes(self) -> bool:
        return EVERY in self.steps

    @property
    def root(self) -> str:
        """The top-level key the path starts from."""
        return str(self.steps[0])

    def resolve(self, record: Any) -> Any:
        """The value at the path (``MISSING`` if absent); for an exploding path, the list of what each element has
        there (``MISSING`` where an element lacks it), or ``MISSING`` when the array itself is absent."""
        return _walk(record, self.steps)


def parse_path(text: str) -> JsonPath:
    """``images[*].url`` → steps ``("images", EVERY, "url")``; ``ConfigError`` for a malformed path."""
    steps: list[str | int] = []
    for part in text.split("."):
        match = _STEP.fullmatch(part)
        if match is None:
            raise ConfigError(f"column source {text!r}: not a JSON path (write e.g. image.url or images[*].url)")
        steps.append(match.group(1))
        steps.extend(EVERY if index == "*" else int(index) for index in _INDEX.findall(match.group(2)))
    if steps.count(EVERY) > 1:
        raise ConfigError(f"column source {text!r}: at most one [*] per path")
    return JsonPath(text, tuple(steps))


def _walk(value: Any, steps: tuple[str | int, ...]) -> Any:
    for position, step in enumerate(steps):
        if step == EVERY:
            if not isinstance(value, list):
                return MISSING
            return [_walk(element, steps[position + 1 :]) for element in value]
        if isinstance(step, str):
            if not isinstance(value, dict) or step not in value:
                return MISSING
            value = value[step]
        else:
            if not isinstance(value, list) or step >= len(value):
                return MISSING
            value = value[step]
    return value
