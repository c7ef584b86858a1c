"""Reading the results file back: last record wins, successes stick, torn tails are repaired, junk is skipped."""

from __future__ import annotations

from pathlib import Path

import orjson

from ingest.results.index import Verdict, load_index, repair

SHA_A = "a" * 64
SHA_B = "b" * 64


def _line(key: str, status: str, *, sha: str = SHA_A, retryable: bool | None = None, line: int = 2) -> bytes:
    error = None if retryable is None else {"type": "x", "message": "m", "retryable": retryable}
    record = {"key": key, "manifest": "m.csv", "line": line, "status": status, "body_sha256": sha, "error": error}
    return orjson.dumps(record) + b"\n"


def test_missing_file_is_empty_index(tmp_path: Path) -> None:
    """A results file that does not exist yet means nothing is done."""
    index = load_index(tmp_path / "none.jsonl")
    assert len(index) == 0
    assert index.decide("k", SHA_A, retry_failed=False) is Verdict.SEND


def test_decision_table(tmp_path: Path) -> None:
    """Succeeded skips; permanent failure skips unless retry_failed; retryable failure is sent again."""
    path = tmp_path / "r.jsonl"
    path.write_bytes(
        _line("ok", "succeeded") + _line("perm", "failed", retryable=False) + _line("temp", "failed", retryable=True)
    )
    index = load_index(path)
    assert index.decide("ok", SHA_A, retry_failed=False) is Verdict.SKIP_DONE
    assert index.decide("perm", SHA_A, retry_failed=False) is Verdict.SKIP_FAILED
    assert index.decide("perm", SHA_A, retry_failed=True) is Verdict.SEND
    assert index.decide("temp", SHA_A, retry_failed=False) is Verdict.SEND
    assert index.decide("new", SHA_A, retry_failed=False) is Verdict.SEND


def test_changed_body_detected(tmp_path: Path) -> None:
    """A succeeded key whose body changed is reported as changed, naming where it was recorded."""
    path = tmp_path / "r.jsonl"
    path.write_bytes(_line("ok", "succeeded", line=17) + _line("perm", "failed", retryable=False))
    index = load_index(path)
    assert index.decide("ok", SHA_B, retry_failed=False) is Verdict.CHANGED
    # An edited row that failed permanently is sent again: the edit probably fixed it.
    assert index.decide("perm", SHA_B, retry_failed=False) is Verdict.SEND


def test_later_records_win_but_success_sticks(tmp_path: Path) -> None:
    """A later success overrides a failure; a later failure never undoes a success."""
    path = tmp_path / "r.jsonl"
    path.write_bytes(
        _line("a", "failed", retryable=True) + _line("a", "succeeded") + _line("a", "failed", retryable=False)
    )
    assert load_index(path).decide("a", SHA_A, retry_failed=True) is Verdict.SKIP_DONE


def test_invalid_and_duplicate_records_do_not_settle_keys(tmp_path: Path) -> None:
    """Only succeeded/failed records decide a key; invalid and duplicate records do not."""
    path = tmp_path / "r.jsonl"
    path.write_bytes(_line("a", "invalid") + _line("b", "duplicate"))
    index = load_index(path)
    assert len(index) == 0


def test_torn_tail_ignored_and_repaired(tmp_path: Path) -> None:
    """A last line without newline (killed mid-write) is ignored, and repair() truncates exactly it."""
    path = tmp_path / "r.jsonl"
    good = _line("a", "succeeded") + _line("b", "succeeded")
    path.write_bytes(good + _line("c", "succeeded")[:25])
    index = load_index(path)
    assert index.torn_tail and index.repair_offset == len(good)
    assert index.decide("c", SHA_A, retry_failed=False) is Verdict.SEND
    repair(path, index)
    assert path.read_bytes() == good
    again = load_index(path)
    assert not again.torn_tail and len(again) == 2


def test_unreadable_middle_lines_are_counted_not_fatal(tmp_path: Path) -> None:
    """Garbage in the middle of the file is skipped and counted with its line number; the rest still loads."""
    path = tmp_path / "r.jsonl"
    path.write_bytes(_line("a", "succeeded") + b"{not json\n" + b"[1,2]\n" + b"\n" + _line("b", "succeeded"))
    index = load_index(path)
    assert len(index) == 2
    assert index.unreadable_count == 2 and index.unreadable_lines == [2, 3]
    assert "keys=2" in repr(index)


def test_fast_path_reads_records_as_written(tmp_path: Path) -> None:
    """Records written by Result.to_line are read without a full parse, retryable flag and body hash included."""
    from ingest.results.record import Result, Status, error_dict

    path = tmp_path / "r.jsonl"
    records = [
        Result("k-ok", "m.csv", 2, Status.SUCCEEDED, {"url": "u"}, body_sha256=SHA_A, asset={"status": "x"}),
        Result(
            "k-temp",
            "m.csv",
            3,
            Status.FAILED,
            {"url": "u"},
            body_sha256=SHA_A,
            error=error_dict("server_error", 'said "retryable":false', retryable=True),
        ),
        Result(
            "k-perm",
            "m.csv",
            4,
            Status.FAILED,
            {"url": "u", "prompt": '"retryable":true'},
            body_sha256=SHA_A,
            error=error_dict("validation_error", "bad", retryable=False),
        ),
        Result('k"quoted', "m.csv", 5, Status.SUCCEEDED, {"url": "u"}, body_sha256=SHA_A),
        Result(None, "m.csv", 6, Status.INVALID, None, error=error_dict("invalid_row", "x", retryable=False)),
    ]
    path.write_bytes(b"".join(record.to_line() for record in records))
    index = load_index(path)
    assert index.unreadable_count == 0 and len(index) == 4
    assert index.decide("k-ok", SHA_A, retry_failed=False) is Verdict.SKIP_DONE
    assert index.decide("k-temp", SHA_A, retry_failed=False) is Verdict.SEND
    assert index.decide("k-perm", SHA_A, retry_failed=False) is Verdict.SKIP_FAILED
    assert index.decide('k"quoted', SHA_A, retry_failed=False) is Verdict.SKIP_DONE  # escaped: full parse


def test_family_files_are_read(tmp_path: Path) -> None:
    """A run reads its base results file and every shard file beside it, whichever of them it writes."""
    (tmp_path / "m.results.shard-0-of-2.jsonl").write_bytes(_line("a", "succeeded"))
    (tmp_path / "m.results.shard-1-of-2.jsonl").write_bytes(_line("b", "succeeded"))
    (tmp_path / "other.results.jsonl").write_bytes(_line("c", "succeeded"))
    index = load_index(tmp_path / "m.results.jsonl")
    assert "a" in index and "b" in index and "c" not in index
    shard_index = load_index(tmp_path / "m.results.shard-1-of-2.jsonl")
    assert "a" in shard_index and "b" in shard_index
