"""The run's garbage-collector settings: applied inside the block, restored after it, even on an error."""

from __future__ import annotations

import gc

import pytest

from ingest.run.collector import YOUNG_THRESHOLD, tuned_collector


def test_tuned_collector_freezes_and_restores() -> None:
    """Inside: what existed is frozen and the young threshold is raised; after: both are as they were."""
    before = gc.get_threshold()
    frozen_before = gc.get_freeze_count()
    with tuned_collector():
        assert gc.get_threshold()[0] >= YOUNG_THRESHOLD
        assert gc.get_threshold()[1:] == before[1:]
        assert gc.get_freeze_count() > frozen_before
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_tuned_collector_restores_after_an_error() -> None:
    """An exception leaving the block still restores the thresholds and unfreezes."""
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), tuned_collector():
        raise RuntimeError("boom")
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
