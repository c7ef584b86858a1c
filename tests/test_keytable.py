"""The compact key table: behaves like a dict of fingerprints, grows, and stays small."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from ingest.keytable import KeyTable, fingerprint


@given(st.lists(st.tuples(st.text(max_size=20), st.integers(min_value=0, max_value=2**32 - 1)), max_size=300))
def test_behaves_like_a_dict(pairs: list[tuple[str, int]]) -> None:
    """Any sequence of puts leaves the same contents as a dict keyed by fingerprint."""
    table, model = KeyTable(), {}
    for key, value in pairs:
        table.put(fingerprint(key), value)
        model[fingerprint(key)] = value
    assert len(table) == len(model)
    for fp, value in model.items():
        assert table.get(fp) == value
    assert table.get(fingerprint("never-inserted-" + str(len(pairs)))) in (None, *model.values())


def test_grows_and_stays_compact() -> None:
    """100k keys cost at most ~21 bytes each with 32-bit values (12 a slot), and every key is still found."""
    table = KeyTable(value_code="I")
    rng = random.Random(5)
    fps = [rng.getrandbits(64) or 1 for _ in range(100_000)]
    for i, fp in enumerate(fps):
        table.put(fp, i)
    assert len(table) == 100_000
    assert all(table.get(fp) == i for i, fp in enumerate(fps))
    assert table.nbytes / len(table) <= 21.2
    assert "keys=100000" in repr(table)


def test_presized_table_does_not_grow() -> None:
    """A table sized for its contents never rehashes (resume pre-sizes from the file)."""
    table = KeyTable(expected=5000)
    before = table.nbytes
    for i in range(5000):
        table.put(i + 1, i)
    assert table.nbytes == before


def test_fingerprint_is_stable_and_non_zero() -> None:
    """Fingerprints are deterministic 64-bit values, never the empty-slot marker."""
    assert fingerprint("a") == fingerprint("a") != fingerprint("b")
    assert 0 < fingerprint("") < 2**64


def test_put_new_keeps_the_first_value() -> None:
    """``put_new`` stores a fingerprint's first value and returns it, unchanged, for every later one."""
    table = KeyTable()
    assert table.put_new(42, 1) is None
    assert table.put_new(42, 2) == 1
    assert table.get(42) == 1 and len(table) == 1
