"""The library surface: ``ingest.__all__`` is sorted, complete and importable (as httpx's own test does)."""

from __future__ import annotations

import inspect

import ingest


def test_all_is_sorted_and_importable() -> None:
    """Every name in ``__all__`` exists, and the list is sorted so additions are easy to review."""
    assert ingest.__all__ == sorted(ingest.__all__)
    for name in ingest.__all__:
        assert hasattr(ingest, name), name


def test_all_lists_every_public_member() -> None:
    """Every public class and function the package exposes is in ``__all__`` (its names are imported on first use:
    touch them all first)."""
    for name in ingest.__all__:
        getattr(ingest, name)
    public = {
        name
        for name, value in vars(ingest).items()
        if not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))
    }
    assert public == set(ingest.__all__) - {"__version__"}
