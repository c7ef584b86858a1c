"""The JSON log lines of a process: ``ingest`` logs one JSON object per line on stderr when not on a terminal."""

from __future__ import annotations

from typing import Any

import orjson


def json_events(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` that is a JSON object with an ``event``."""
    events = []
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, dict) and "event" in value:
            events.append(value)
    return events
