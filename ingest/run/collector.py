"""The garbage collector's settings while a run's pipeline runs (``tuned_collector``).

The per-item path makes no reference cycles, so the cyclic collector finds nothing to free there; but with
CPython's default young-generation threshold (700 allocations) it runs every few items and promotes whatever is in
flight at that moment (items queued and in progress, responses, records in the sink's batch) to the older
generations, whose collections then walk them again, and every full collection walks everything imported at
start-up. At C = 256 that was ~14% of a run's CPU against the canned server. So, for the duration of the run:

- ``gc.freeze()``: what exists when the run starts (modules, settings, the resume index) is moved to the permanent
  generation, never walked again by the run's collections;
- a young-generation threshold of ``YOUNG_THRESHOLD`` allocations: an item's objects die (by reference count)
  before a collection sees them, so few are promoted.

Cycles are still collected (error paths make some: an exception and its traceback), only less often; both settings
are restored when the run ends.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG_THRESHOLD = 50_000  # allocations between two young-generation collections (CPython's default: 700)


@contextmanager
def tuned_collector() -> Iterator[None]:
    """Freeze what exists and collect the young generation less often, for the duration of the block."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(YOUNG_THRESHOLD, thresholds[0]), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
