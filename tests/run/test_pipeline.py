"""``run_pipeline`` end to end, in process, against real loopback servers: the embedded fake Assets API, or a
scripted spy server where a test needs to see every request.

Each test writes its manifests to ``tmp_path``, runs the real pipeline and checks the results file, the
``RunReport`` and what the server saw (its ledger).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from ingest.admission.keys import INGEST_NAMESPACE, KeyDeriver
from ingest.errors import AuthRejected, RunAborted
from ingest.fakeserver import FakeServer, FakeServerConfig, FaultConfig, running_fake_server
from ingest.models import Asset
from ingest.run.pipeline import RAMP_PER_SLOT
from ingest.upload.retry import RetryPolicy
from tests.helpers.pipeline import Hit, Reply, error_body, make_config, run, scripted_server
from tests.helpers.records import by_line, media_rows, media_url, read_results, write_csv, write_jsonl

pytestmark = pytest.mark.anyio

RECORD_FIELDS = {
    "key",
    "manifest",
    "line",
    "status",
    "attempts",
    "http_status",
    "item",
    "body_sha256",
    "asset",
    "error",
    "finished_at",
    "elapsed_ms",
}


def requests(server: FakeServer) -> int:
    return int(server.ledger.stats()["requests"])


def assert_every_line_parses(path: Path) -> None:
    raw = path.read_bytes()
    assert raw.endswith(b"\n"), "the results file must end with a complete line"
    for line in raw.splitlines():
        assert isinstance(orjson.loads(line), dict)


# -- happy path and record shape ----------------------------------------------------------------------------


async def test_happy_path_creates_every_item_once(tmp_path: Path, fake_server: FakeServer) -> None:
    """N valid rows become N succeeded records with every DESIGN field and N assets on the server, exit 0."""
    rows = [{**row, "prompt": f"prompt {i}"} for i, row in enumerate(media_rows(25))]
    manifest = write_jsonl(tmp_path / "media.jsonl", rows)
    results = tmp_path / "results.jsonl"

    report = await run(make_config([manifest], results, fake_server.url))

    assert report.exit_code == 0
    assert report.aborted is None
    records = read_results(results)
    assert len(records) == 25
    stats = fake_server.ledger.stats()
    assert stats["created"] == 25
    assert stats["duplicate_bodies"] == 0
    for record in records:
        assert record.keys() >= RECORD_FIELDS
        assert record["status"] == "succeeded"
        assert record["manifest"] == str(manifest)
        assert record["attempts"] == 1
        assert record["http_status"] == 201
        assert record["error"] is None
        assert record["finished_at"].endswith("Z")
        assert record["elapsed_ms"] >= 0
        assert len(record["body_sha256"]) == 64
        asset = Asset.model_validate(record["asset"])
        assert asset.url == record["item"]["url"] == rows[record["line"] - 1]["url"]
        assert record["item"]["prompt"] == rows[record["line"] - 1]["prompt"]
    assert sorted(record["line"] for record in records) == list(range(1, 26))
    assert {record["key"] for record in records} == fake_server.ledger.keys
    assert_every_line_parses(results)


async def test_csv_manifest_runs_like_jsonl(tmp_path: Path, fake_server: FakeServer) -> None:
    """A CSV manifest's data rows are numbered by physical line (header is line 1) and all succeed."""
    manifest = write_csv(tmp_path / "media.csv", media_rows(5, "csv", prompt="a cat"))
    results = tmp_path / "results.jsonl"

    report = await run(make_config([manifest], results, fake_server.url))

    assert report.exit_code == 0
    records = read_results(results)
    assert sorted(record["line"] for record in records) == [2, 3, 4, 5, 6]
    assert {record["status"] for record in records} == {"succeeded"}
    assert fake_server.ledger.stats()["created"] == 5


async def test_invalid_rows_are_recorded_and_others_still_succeed(tmp_path: Path, fake_server: FakeServer) -> None:
    """Bad rows become invalid records naming manifest, line and field; the good rows succeed; exit code 1."""
    manifest = write_jsonl(
        tmp_path / "media.jsonl",
        [
            {"url": media_url(1), "type": "image"},
            {"url": "not-a-url", "type": "image"},
            {"url": media_url(3), "type": "sculpture"},
            "{this is not json",
            {"url": media_url(5), "type": "image", "prompt": "x" * 2001},
            {"url": media_url(6), "type": "image"},
        ],
    )
    results = tmp_path / "results.jsonl"

    report = await run(make_config([manifest], results, fake_server.url))

    assert report.exit_code == 1
    records = by_line(read_results(results))
    assert len(records) == 6
    for line in (1, 6):
        assert records[(str(manifest), line)]["status"] == "succeeded"
    expected_fields = {2: "url", 3: "type", 4: None, 5: "prompt"}
    for line, field_name in expected_fields.items():
        record = records[(str(manifest), line)]
        assert record["status"] == "invalid"
        assert record["manifest"] == str(manifest)
        assert record["error"]["type"] == "invalid_row"
        assert record["error"].get("field") == field_name  # absent for a line-level problem
        assert record["error"]["retryable"] is False
        assert record["error"]["message"]
    assert fake_server.ledger.stats()["requests"] == 2


# -- duplicates ---------------------------------------------------------------------------------------------


async def test_duplicate_rows_are_one_item(tmp_path: Path, fake_server: FakeServer) -> None:
    """A repeated row is a duplicate of the first; a repeat with another body is a conflict naming the first."""
    manifest = write_jsonl(
        tmp_path / "media.jsonl",
        [
            {"url": media_url(1), "type": "image", "prompt": "a cat"},
            {"url": media_url(2), "type": "image"},
            {"url": media_url(1), "type": "image", "prompt": "a cat"},
            {"url": media_url(2), "type": "image", "prompt": "a different prompt"},
        ],
    )
    results = tmp_path / "results.jsonl"

    report = await run(make_config([manifest], results, fake_server.url))

    records = by_line(read_results(results))
    name = str(manifest)
    assert records[(name, 1)]["status"] == "succeeded"
    duplicate = records[(name, 3)]
    assert duplicate["status"] == "duplicate"
    assert duplicate["duplicate_of"] == {"manifest": name, "line": 1}
    assert duplicate["key"] == records[(name, 1)]["key"]
    conflict = records[(name, 4)]
    assert conflict["status"] == "invalid"
    assert conflict["error"]["type"] == "duplicate_conflict"
    assert "line 2" in conflict["error"]["message"]
    assert conflict["duplicate_of"] == {"manifest": name, "line": 2}
    assert report.exit_code == 1
    stats = fake_server.ledger.stats()
    assert stats["requests"] == 2
    assert stats["created"] == 2


async def test_duplicates_across_two_manifests(tmp_path: Path, fake_server: FakeServer) -> None:
    """The same item in a CSV and a JSONL manifest of one run is sent once; the later row names the first."""
    csv_manifest = write_csv(
        tmp_path / "a.csv",
        [{"url": media_url(1), "type": "image", "prompt": "p"}, {"url": media_url(2), "type": "image", "prompt": "p"}],
    )
    jsonl_manifest = write_jsonl(
        tmp_path / "b.jsonl",
        [
            {"url": media_url(1), "type": "image", "prompt": "p"},
            {"url": media_url(2), "type": "image", "prompt": "other"},
            {"url": media_url(3), "type": "image"},
        ],
    )
    results = tmp_path / "results.jsonl"

    await run(make_config([csv_manifest, jsonl_manifest], results, fake_server.url))

    records = by_line(read_results(results))
    duplicate = records[(str(jsonl_manifest), 1)]
    assert duplicate["status"] == "duplicate"
    assert duplicate["duplicate_of"] == {"manifest": str(csv_manifest), "line": 2}
    conflict = records[(str(jsonl_manifest), 2)]
    assert conflict["status"] == "invalid"
    assert conflict["error"]["type"] == "duplicate_conflict"
    assert str(csv_manifest) in conflict["error"]["message"]
    assert "line 3" in conflict["error"]["message"]
    assert fake_server.ledger.stats()["created"] == 3


# -- resume ---------------------------------------------------------------------------------------------------


async def test_rerun_of_finished_run_sends_nothing(tmp_path: Path, fake_server: FakeServer) -> None:
    """Rerunning a finished run sends zero requests and records nothing new for the succeeded items."""
    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(20))
    results = tmp_path / "results.jsonl"
    config = make_config([manifest], results, fake_server.url)
    await run(config)
    before_records = read_results(results)
    before_requests = requests(fake_server)

    report = await run(config)

    assert requests(fake_server) == before_requests
    assert read_results(results) == before_records  # only the rerun's own run records were added
    assert report.exit_code == 0
    assert report.stats.skipped_done == 20


async def test_interrupted_run_resumes_with_only_the_remainder(tmp_path: Path, fake_server: FakeServer) -> None:
    """A run stopped after part of the manifest (``limit``) is finished by a rerun that sends only the rest."""
    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(30))
    results = tmp_path / "results.jsonl"

    first = await run(make_config([manifest], results, fake_server.url, limit=12))
    assert first.stats.by_status["succeeded"] == 12
    assert requests(fake_server) == 12

    second = await run(make_config([manifest], results, fake_server.url))

    assert second.stats.skipped_done == 12
    assert requests(fake_server) == 30
    stats = fake_server.ledger.stats()
    assert stats["created"] == 30
    assert stats["replayed"] == 0
    assert stats["duplicate_bodies"] == 0
    records = read_results(results)
    assert len(records) == 30
    assert sorted(record["line"] for record in records) == list(range(1, 31))


async def test_torn_last_line_is_repaired_and_item_resent_with_same_key(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """A half-written last record is dropped on rerun; its item is sent again under the same key, never twice."""
    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(10))
    results = tmp_path / "results.jsonl"
    config = make_config([manifest], results, fake_server.url)
    await run(config)
    # Killed mid-write: no run_ended record, and the last item record half written.
    lines = [line for line in results.read_bytes().splitlines(keepends=True) if b'"record":"run_ended"' not in line]
    torn = orjson.loads(lines[-1])
    results.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # killed mid-write
    before = requests(fake_server)

    report = await run(config)

    assert requests(fake_server) == before + 1
    assert fake_server.ledger.stats()["replayed"] == 1
    assert fake_server.ledger.stats()["duplicate_bodies"] == 0
    assert fake_server.ledger.stats()["created"] == 10
    assert report.exit_code == 0
    assert_every_line_parses(results)
    records = read_results(results)
    assert len(records) == 10
    resent = [record for record in records if record["line"] == torn["line"]]
    assert len(resent) == 1
    assert resent[0]["key"] == torn["key"]
    assert resent[0]["status"] == "succeeded"


async def test_retryable_failures_are_retried_on_the_next_run(tmp_path: Path) -> None:
    """Items that failed with 5xx are recorded as retryable and sent again (and succeed) on the next run."""
    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(6))
    results = tmp_path / "results.jsonl"
    policy = RetryPolicy(max_attempts=2, backoff_initial=0.01, backoff_max=0.02)
    broken = FakeServerConfig(faults=FaultConfig(p_5xx=1.0, retry_after_s=0.0))
    async with running_fake_server(broken) as server:
        first = await run(make_config([manifest], results, server.url, policy=policy))
        assert server.ledger.stats()["created"] == 0
    assert first.exit_code == 1
    failed = read_results(results)
    assert {record["status"] for record in failed} == {"failed"}
    assert all(record["error"]["retryable"] is True and record["attempts"] == 2 for record in failed)

    async with running_fake_server() as healthy:
        second = await run(make_config([manifest], results, healthy.url))
        assert healthy.ledger.stats()["created"] == 6

    assert second.exit_code == 0
    latest = {record["key"]: record for record in read_results(results)}
    assert {record["status"] for record in latest.values()} == {"succeeded"}


async def test_permanent_failure_is_not_retried_unless_retry_failed(tmp_path: Path, fake_server: FakeServer) -> None:
    """A 422 "payload changed" is a permanent failure: a rerun skips it, ``retry_failed=True`` sends it again."""
    first_manifest = write_jsonl(
        tmp_path / "first.jsonl", [{"url": media_url(1), "type": "image", "idempotency_key": "k-1"}]
    )
    await run(make_config([first_manifest], tmp_path / "first.results.jsonl", fake_server.url))
    reused = write_jsonl(
        tmp_path / "reused.jsonl",
        [
            {"url": media_url(2), "type": "image", "idempotency_key": "k-1"},
            {"url": media_url(3), "type": "image"},
        ],
    )
    results = tmp_path / "results.jsonl"

    first = await run(make_config([reused], results, fake_server.url))
    (failed,) = [record for record in read_results(results) if record["status"] == "failed"]
    assert first.exit_code == 1
    assert failed["http_status"] == 422
    assert failed["attempts"] == 1
    assert failed["error"]["retryable"] is False
    assert "payload changed" in failed["error"]["message"]

    before = requests(fake_server)
    rerun = await run(make_config([reused], results, fake_server.url))
    assert requests(fake_server) == before
    assert rerun.stats.skipped_failed == 1
    assert rerun.exit_code == 1  # the skipped item is still not in the library: a nightly rerun keeps saying so

    forced = await run(make_config([reused], results, fake_server.url, retry_failed=True))
    assert requests(fake_server) == before + 1
    assert forced.stats.by_status["failed"] == 1
    assert fake_server.ledger.stats()["payload_changed_422"] == 2


async def test_row_changed_after_ingest_is_reported_not_resent(tmp_path: Path, fake_server: FakeServer) -> None:
    """A row edited after it succeeded is recorded invalid ``changed_since_ingested`` and nothing is sent."""
    rows = media_rows(4, prompt="original")
    manifest = write_jsonl(tmp_path / "media.jsonl", rows)
    results = tmp_path / "results.jsonl"
    await run(make_config([manifest], results, fake_server.url))
    rows[2] = {**rows[2], "prompt": "edited"}
    write_jsonl(manifest, rows)
    before = requests(fake_server)

    report = await run(make_config([manifest], results, fake_server.url))

    assert requests(fake_server) == before
    assert report.exit_code == 1
    new_records = read_results(results)[4:]
    assert len(new_records) == 1
    (changed,) = new_records
    assert changed["line"] == 3
    assert changed["status"] == "invalid"
    assert changed["error"]["type"] == "changed_since_ingested"
    assert changed["item"]["prompt"] == "edited"


# -- keys -----------------------------------------------------------------------------------------------------


async def test_key_settings_derive_keys_deterministically(tmp_path: Path, fake_server: FakeServer) -> None:
    """Default keys are uuid5(url); key_namespace and key_fields change them predictably; keys reach the server."""
    url = media_url(1)
    manifest = write_jsonl(
        tmp_path / "media.jsonl",
        [{"url": url, "type": "image", "collection_id": "c1"}, {"url": url, "type": "image", "collection_id": "c2"}],
    )

    default = await run(make_config([manifest], tmp_path / "default.jsonl", fake_server.url))
    records = by_line(read_results(tmp_path / "default.jsonl"))
    first_key = str(uuid.uuid5(INGEST_NAMESPACE, url))
    assert records[(str(manifest), 1)]["key"] == first_key
    # same url, other collection: under the default key that is one item with two bodies, a conflict
    assert records[(str(manifest), 2)]["error"]["type"] == "duplicate_conflict"
    assert default.exit_code == 1

    namespaced = KeyDeriver(key_namespace="reingest-2026")
    await run(make_config([manifest], tmp_path / "ns.jsonl", fake_server.url, keys=namespaced))
    ns_key = by_line(read_results(tmp_path / "ns.jsonl"))[(str(manifest), 1)]["key"]
    assert ns_key == str(uuid.uuid5(uuid.uuid5(INGEST_NAMESPACE, "reingest-2026"), url))
    assert ns_key != first_key

    widened = KeyDeriver(key_fields=("url", "collection_id"))
    report = await run(make_config([manifest], tmp_path / "wide.jsonl", fake_server.url, keys=widened))
    wide = read_results(tmp_path / "wide.jsonl")
    assert report.exit_code == 0
    assert {record["status"] for record in wide} == {"succeeded"}
    assert len({record["key"] for record in wide}) == 2

    server_keys = {entry["idempotency_key"] for entry in fake_server.ledger.assets}
    assert server_keys == {first_key, ns_key, *(record["key"] for record in wide)}


async def test_explicit_idempotency_key_is_used_verbatim(tmp_path: Path, fake_server: FakeServer) -> None:
    """A manifest's ``idempotency_key`` column is sent and recorded as is; other rows get derived keys."""
    manifest = write_csv(
        tmp_path / "media.csv",
        [
            {"url": media_url(1), "type": "image", "idempotency_key": "my-own-key_0001"},
            {"url": media_url(2), "type": "image", "idempotency_key": ""},
        ],
    )
    results = tmp_path / "results.jsonl"

    await run(make_config([manifest], results, fake_server.url))

    records = by_line(read_results(results))
    assert records[(str(manifest), 2)]["key"] == "my-own-key_0001"
    assert records[(str(manifest), 3)]["key"] == str(uuid.uuid5(INGEST_NAMESPACE, media_url(2)))
    assert {entry["idempotency_key"] for entry in fake_server.ledger.assets} == {
        "my-own-key_0001",
        str(uuid.uuid5(INGEST_NAMESPACE, media_url(2))),
    }


# -- concurrency and rate -------------------------------------------------------------------------------------


async def test_concurrency_is_a_hard_cap(tmp_path: Path) -> None:
    """With concurrency=4 a slow server never has more than 4 of our requests in flight at once."""
    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(40))
    async with scripted_server(lambda hit: Reply(201, delay=0.03)) as server:
        report = await run(make_config([manifest], tmp_path / "results.jsonl", server.url, concurrency=4))
    assert report.exit_code == 0
    assert len(server.hits) == 40
    assert server.peak_in_flight == 4


async def test_rate_limit_holds_in_every_one_second_window(tmp_path: Path, fake_server: FakeServer) -> None:
    """With rate=50, no 1 s window of server arrivals (the first included) holds more than 50 requests, give or
    take the jitter between a request's start and its arrival (issue 5's bound: 1.05 x rate + 1 = 53)."""
    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(150))

    report = await run(make_config([manifest], tmp_path / "results.jsonl", fake_server.url, rate=50, concurrency=16))

    stats = fake_server.ledger.stats()
    assert report.exit_code == 0
    assert stats["created"] == 150
    assert stats["first_1s_requests"] <= 53
    assert stats["max_requests_in_any_1s"] <= 53


# -- aborts ---------------------------------------------------------------------------------------------------


async def test_wrong_key_aborts_at_once(tmp_path: Path) -> None:
    """A 401 aborts the run (exit 3, AuthRejected) without failed records and with few requests after it."""
    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(30))
    results = tmp_path / "results.jsonl"
    async with running_fake_server(FakeServerConfig(api_key="the-right-key")) as server:
        report = await run(make_config([manifest], results, server.url, concurrency=4), key="a-wrong-key")
        stats = server.ledger.stats()

    assert report.exit_code == 3
    assert isinstance(report.aborted, AuthRejected)
    assert report.aborted.status == 401
    assert stats["created"] == 0
    assert stats["requests_after_first_auth_failure"] <= 4
    assert stats["requests"] <= 5
    records = read_results(results) if results.exists() else []
    assert not [record for record in records if record["status"] == "failed"]
    if results.exists() and results.stat().st_size:
        assert_every_line_parses(results)


async def test_revoked_key_leaves_unfinished_items_pending(tmp_path: Path) -> None:
    """After a revocation (403) the run aborts, unfinished items have no record, and a rerun finishes them."""
    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(60))
    results = tmp_path / "results.jsonl"
    revoking = FakeServerConfig(faults=FaultConfig(revoke_after=20))
    async with running_fake_server(revoking) as server:
        report = await run(make_config([manifest], results, server.url, concurrency=4))
        stats = server.ledger.stats()

    assert report.exit_code == 3
    assert isinstance(report.aborted, AuthRejected)
    assert report.aborted.status == 403
    assert stats["requests_after_first_auth_failure"] <= 4
    records = read_results(results)
    assert {record["status"] for record in records} == {"succeeded"}
    # an answer in flight when the run aborted may be lost: created on the server, pending for us
    assert 0 < len(records) <= stats["created"] <= 20
    assert_every_line_parses(results)

    async with running_fake_server() as fresh:
        rerun = await run(make_config([manifest], results, fresh.url, concurrency=4))
        assert fresh.ledger.stats()["requests"] == 60 - len(records)

    assert rerun.exit_code == 0
    final = read_results(results)
    assert len(final) == 60
    assert len({record["key"] for record in final}) == 60


async def test_failure_threshold_aborts_the_run(tmp_path: Path) -> None:
    """``max_failures=3`` against a server that rejects everything ends the run early with RunAborted, exit 3."""
    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(50))
    results = tmp_path / "results.jsonl"

    def reject(hit: Hit) -> Reply:
        return Reply(400, body=error_body(400, "no"))

    async with scripted_server(reject) as server:
        report = await run(make_config([manifest], results, server.url, concurrency=2, max_failures=3))

    assert report.exit_code == 3
    assert isinstance(report.aborted, RunAborted)
    records = read_results(results)
    assert 3 <= len(records) < 50
    assert {record["status"] for record in records} == {"failed"}
    assert len(server.hits) < 50
    assert_every_line_parses(results)


# -- sink -----------------------------------------------------------------------------------------------------


async def test_results_file_is_complete_json_lines_appended_across_runs(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """Every run appends whole JSON lines; earlier records are never rewritten."""
    manifest = write_jsonl(tmp_path / "media.jsonl", [*media_rows(5), {"url": "bad", "type": "image"}])
    results = tmp_path / "results.jsonl"
    await run(make_config([manifest], results, fake_server.url))
    first = results.read_bytes()

    await run(make_config([manifest], results, fake_server.url, fsync_interval=0.01))

    second = results.read_bytes()
    assert second.startswith(first)
    assert_every_line_parses(results)
    statuses: list[Any] = [record["status"] for record in read_results(results)]
    # the invalid row is reported again on each run (it has no key to settle); valid items only once
    assert statuses.count("succeeded") == 5
    assert statuses.count("invalid") == 2


@pytest.mark.anyio
async def test_the_first_requests_of_the_slots_go_out_spread_over_the_preflights_round_trip(tmp_path: Path) -> None:
    """C requests sent at once come back at once, round trip after round trip; the run staggers the slots' first
    requests over the preflight's round trip, 0.5 ms a slot at most (``RAMP_PER_SLOT``). With a 200 ms preflight and
    C = 32, the 32nd request leaves at least 15 ms after the first (in one burst, in process: ~11 ms), and every
    item still lands once."""
    slots = 32
    manifest = write_jsonl(tmp_path / "m.jsonl", media_rows(4 * slots))
    results = tmp_path / "results.jsonl"
    slow_probe = Reply(422, body=error_body(422, "Invalid request body: url: Field required"), delay=0.2)
    async with scripted_server(lambda hit: Reply(201, delay=0.05), probe_script=lambda: slow_probe) as server:
        config = make_config([manifest], results, server.url, concurrency=slots, rate=1e6, preflight=True)
        report = await run(config)
    assert report.exit_code == 0 and len({hit.key for hit in server.hits}) == 4 * slots
    first = sorted(hit.arrived for hit in server.hits)[:slots]
    # slot n's first request goes n steps in: the 32nd arrival is slot 31's, 31 steps in (30 with a step's slack)
    assert first[-1] - first[0] >= 30 * RAMP_PER_SLOT * 0.9, f"{slots} requests within {first[-1] - first[0]:.4f} s"
