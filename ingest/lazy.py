"""Names of a package's surface imported on first use (PEP 562), not with the package.

Every ``ingest`` command imports ``ingest`` first, and most need a few names of each package: ``ingest validate`` and
a rerun with nothing left to send never import aiohttp (a third of the start-up), which is most of their time."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(package: str, namespace: dict[str, Any], homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``homes`` maps each name to the module it lives in."""

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        namespace[name] = value  # the next lookup is a plain attribute
        return value

    return __getattr__
