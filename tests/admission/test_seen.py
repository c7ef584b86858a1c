"""The duplicate table: exact under forced fingerprint collisions, whatever the keys' shape, in memory or spilled."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from ingest.admission.admit import Rules, WorkItem
from ingest.admission.seen import First, SeenKeys
from ingest.keytable import KeyTable, fingerprint
from ingest.manifest.source import ManifestSource, read_manifest
from ingest.results.record import Result, Status

UUIDS = [str(uuid.UUID(int=i * 7919 + 1)) for i in range(40)]
KEYS = st.one_of(
    st.sampled_from(UUIDS),  # stored as 16 bytes
    st.text(max_size=15),  # inline (at most 15 UTF-8 bytes, some not)
    st.text(min_size=16, max_size=80),  # in units of their own
    st.sampled_from([u.upper() for u in UUIDS[:5]] + [u.replace("-", "")[:8] + "-" + u[8:] for u in UUIDS[:5]]),
)


def tiny(key: str) -> int:
    """Two bits of fingerprint: nearly every pair of keys collides."""
    return fingerprint(key) % 4 + 1


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(KEYS, st.integers(0, 2**64 - 1)), max_size=120), st.sampled_from([None, tiny]))
def test_first_occurrences_match_a_dict_of_full_keys(rows: list[tuple[str, int]], fp_of: object) -> None:
    """With 2-bit or real fingerprints, and records flushed to the file every few units, every key's first
    occurrence is exactly what a dict of full keys says: a new key is never a repeat, a repeat never new."""
    seen = SeenKeys(fingerprint=fp_of if callable(fp_of) else None, flush_bytes=96)
    model: dict[str, First] = {}
    for line, (key, body) in enumerate(rows, start=1):
        manifest = line % 3
        got = seen.first(key, fingerprint(key), manifest=manifest, line=line, body=body)
        assert got == model.get(key)
        model.setdefault(key, First(manifest, line, body))
    assert len(seen) == len(model)
    seen.close()


def test_a_uuid_with_its_dashes_moved_is_another_key() -> None:
    """Two 36-character keys with the same hex digits but dashes elsewhere are not one key, even on one slot."""
    canonical = UUIDS[3]
    moved = canonical.replace("-", "")[:9] + "-" + canonical.replace("-", "")[9:12] + canonical[13:]
    assert len(moved) == 36 and moved.replace("-", "") == canonical.replace("-", "")
    seen = SeenKeys(fingerprint=lambda _: 7)
    assert seen.first(canonical, 0, manifest=0, line=1, body=1) is None
    assert seen.first(moved, 0, manifest=0, line=2, body=1) is None
    assert seen.first(canonical.upper(), 0, manifest=0, line=3, body=1) is None
    assert seen.first(moved, 0, manifest=0, line=4, body=1) == First(0, 2, 1)
    assert seen.first(canonical, 0, manifest=0, line=5, body=1) == First(0, 1, 1)
    assert seen.collisions == 2


def test_records_live_on_disk_and_memory_is_the_table() -> None:
    """Past the buffer, records go to the (unlinked) spill file; memory holds 12 bytes a slot, 14 a key."""
    seen = SeenKeys(expected=50_000)
    keys = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"https://x/{i}")) for i in range(50_000)]
    for i, key in enumerate(keys):
        assert seen.first(key, fingerprint(key), manifest=0, line=i, body=i) is None
    assert len(seen.spill) == 50_000 and "on_disk=" in repr(seen.spill)
    assert all(seen.first(k, fingerprint(k), manifest=0, line=0, body=0) == First(0, i, i) for i, k in enumerate(keys))
    assert seen.table.nbytes / len(seen) <= 14.2
    assert KeyTable(value_code="I").nbytes == 1024 * 12
    seen.close()


def test_no_temporary_directory_keeps_the_records_in_memory(tmp_path: Path) -> None:
    """A spill file that cannot be made is one warning; the table then keeps its records in memory, still exact."""
    seen = SeenKeys(fingerprint=tiny, directory=str(tmp_path / "missing"), flush_bytes=64)
    keys = [f"key-{i}" for i in range(200)]
    with capture_logs() as logs:
        assert all(seen.first(k, 0, manifest=0, line=i, body=i) is None for i, k in enumerate(keys))
    assert [e["event"] for e in logs] == ["seen.spill_failed"]
    assert all(seen.first(k, 0, manifest=1, line=0, body=0) == First(0, i, i) for i, k in enumerate(keys))


def test_admission_under_colliding_fingerprints_sends_every_unique_row(tmp_path: Path) -> None:
    """With one fingerprint for every key, admission still sends each distinct item once, and marks exactly the
    repeats as duplicates (same body) or conflicts (other body) of the right earlier line."""
    manifest = tmp_path / "m.jsonl"
    lines = [{"url": f"https://v3b.fal.media/files/{i % 30}.png"} for i in range(60)]  # lines 31-60 repeat 1-30
    lines += [{"url": "https://v3b.fal.media/files/x.png", "idempotency_key": "k-1"}]  # line 61
    lines += [{"url": "https://v3b.fal.media/files/y.png", "idempotency_key": "k-1"}]  # line 62: conflict
    lines += [
        {"url": f"https://v3b.fal.media/files/{i}.png", "idempotency_key": "k-" + "z" * 40 + str(i)} for i in (1, 2)
    ]
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    admission = Rules().admission()
    admission.seen = SeenKeys(fingerprint=lambda _: 1, flush_bytes=64)
    decisions = [admission.admit(row) for row in read_manifest(ManifestSource.open(str(manifest)))]
    sent = [d for d in decisions if isinstance(d, WorkItem)]
    assert [d.line for d in sent] == [*range(1, 31), 61, 63, 64]
    results = [d for d in decisions if isinstance(d, Result)]
    duplicates = [r for r in results if r.status is Status.DUPLICATE]
    assert [(r.line, r.duplicate_of) for r in duplicates] == [
        (line, {"manifest": str(manifest), "line": line - 30}) for line in range(31, 61)
    ]
    (conflict,) = [r for r in results if r.status is Status.INVALID]
    assert conflict.line == 62 and conflict.error is not None and conflict.error["type"] == "duplicate_conflict"
    assert conflict.duplicate_of == {"manifest": str(manifest), "line": 61}
