"""The benchmark harness (``bench/``) cannot rot: its smoke profile runs end to end, and its pure parts are right.

No speed is asserted here — only that every row is produced, with sane figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import orjson
import pytest

from bench import data, servers
from bench.profiles import FULL, SMOKE
from bench.sections import items_per_s_at_server, max_window, steady_rate
from bench.table import COLUMNS
from ingest.admission.keys import KeyDeriver, row_salt
from ingest.cli.run import manifest_options
from ingest.manifest.skip import LineSkip
from ingest.manifest.source import ManifestSource, read_manifest
from ingest.models import UploadRequest, UploadResponse
from ingest.results.index import load_index
from ingest.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

EXPECTED_ROWS = [
    "flaky: completion time s",
    "flaky: server 429s, share of requests",
    "throttle: completion time s",
    "throttle: server 429s, share of requests",
    "throttle-headers: completion time s",
    "throttle-headers: server 429s, share of requests",
    "rerun: s, nothing left (jsonl)",
    "rerun: s, nothing left (csv)",
    "memory: peak RSS MB, validate",
    "memory: peak RSS MB, dry-run",
    "memory: peak RSS MB, run",
    "throughput: items/s at the server",
    "throughput: items/s, client's own clock",
    "cpu: CPU s per 1k items",
    "latency: fraction of C/latency (100 ms) at the server",
    "latency: fraction of C/latency (100 ms), client's own clock",
    "rate: steady rate (after 1st s)",
    "rate: max in any 1 s window",
    "resume: s to first new request",
    "resume: peak RSS MB",
    "peers: GNU parallel + curl per item items/s",
    "peers: xargs -P + curl per item items/s",
    "peers: curl --parallel (one process) items/s",
    "peers: ingest run --processes 2 (wall, start-up included) items/s",
    "peers: httpx AsyncClient loop items/s",
    "peers: bare aiohttp loop on uvloop items/s",
    "rehost: MiB/s, local files",
    "rehost: MiB/s, local files, transfer alone",
    "rehost: ms, local files, spawn to first upload",
    "rehost: ms, local files, last answer to exit",
    "rehost: MiB/s, one big file",
    "rehost: MiB/s, one big file, transfer alone",
    "rehost: ms, one big file, spawn to first upload",
    "rehost: ms, one big file, last answer to exit",
    "rehost: peak RSS MB, one big file",
]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, object]]:
    """``python -m bench.run --smoke`` once: its stdout table and its JSON figures."""
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.timeout(230)
def test_smoke_prints_one_table_with_every_row(smoke_run: tuple[str, dict[str, object]]) -> None:
    """The table has its header, its columns, and one line per expected row."""
    table, _ = smoke_run
    assert "servers (127.0.0.1):" in table
    header = next(line for line in table.splitlines() if line.startswith("row "))
    for column in COLUMNS:
        assert column in header
    for row in EXPECTED_ROWS:
        assert any(line.startswith(row) for line in table.splitlines()), f"missing row {row!r}:\n{table}"


@pytest.mark.slow
@pytest.mark.timeout(230)
def test_smoke_figures_are_sane(smoke_run: tuple[str, dict[str, object]]) -> None:
    """Figures are positive (429 shares at least 0), baselines too; a peer is measured or 'not installed'."""
    _, figures = smoke_run
    rows = figures["rows"]
    assert isinstance(rows, list)
    per_c = 5  # throughput at the server and on the client's clock, cpu, latency at the server and on the clock
    assert len(rows) == len(EXPECTED_ROWS) + per_c * (len(SMOKE.concurrencies) - 1) + 2 * (len(SMOKE.rates) - 1)
    for row in rows:
        measured, baseline = row["measured"], row["baseline"]
        if measured is None:
            assert row["section"] == "peers" and row["note"].startswith("not installed"), row
            continue
        if row["name"].startswith("server 429s"):  # a share, which may well be 0
            assert 0 <= measured["min"] <= 1 and baseline is not None and 0 <= baseline["min"] <= 1, row
            continue
        assert measured["median"] > 0 and measured["min"] > 0, row
        if baseline is not None:
            assert baseline["median"] > 0, row
    by_name = {(row["section"], row["name"]): row for row in rows}
    latency = by_name[("latency", "fraction of C/latency (100 ms) at the server")]
    assert (
        0 < latency["measured"]["median"] <= 1.0 + 1e-9
    )  # a fraction of C/latency: the server's window is ≥ N/C × delay
    assert latency["met"] is not None and by_name[("throughput", "items/s at the server")]["met"] is not None
    assert by_name[("rate", "max in any 1 s window")]["measured"]["median"] >= 1


def test_python_server_answers_a_valid_201_and_records_arrivals() -> None:
    """The fallback canned server answers uploads with a spec-valid 201 and reports their arrival times."""
    body = UploadRequest(url="https://v3b.fal.media/files/x.png", type="image").body_bytes()
    with servers.python_server(record=True) as server:
        url = server.base_url + "/assets/uploads"
        for i in range(3):
            headers = {"Content-Type": "application/json", "Idempotency-Key": f"key-{i}"}
            request = urllib.request.Request(url, data=body, method="POST", headers=headers)
            with urllib.request.urlopen(request, timeout=5) as resp:
                assert resp.status == 201
                UploadResponse.model_validate_json(resp.read())
        times = servers.fetch_arrivals(server)
    assert len(times) == 3 and times == sorted(times)


def test_recording_server_leaves_an_unkeyed_probe_out_of_the_arrivals() -> None:
    """An upload without an Idempotency-Key (ingest's preflight probe) is answered and counted as a probe, but its
    arrival is not recorded, so it never widens the window of an items/s figure."""
    with servers.python_server(record=True) as server:
        url = server.base_url + "/assets/uploads"
        for headers in ({}, {"Idempotency-Key": "k-1"}, {"idempotency-key": "k-2"}):
            request = urllib.request.Request(url, data=b"{}", method="POST", headers=headers)
            with urllib.request.urlopen(request, timeout=5) as resp:
                assert resp.status == 201
        assert server.stats_url is not None
        with urllib.request.urlopen(server.stats_url + "?reset=1", timeout=5) as resp:
            stats = json.loads(resp.read())
        assert (stats["count"], stats["probes"], len(stats["times"])) == (3, 1, 2)
        assert servers.fetch_arrivals(server) == []  # the reset cleared them


def test_items_per_s_at_the_server_spans_first_arrival_to_last_answer() -> None:
    """Items/s at the server is the uploads recorded over the first arrival to the last arrival plus the delay."""
    assert items_per_s_at_server([10.0, 10.5, 11.0]) == pytest.approx(3.0)  # 3 uploads in 1 s
    assert items_per_s_at_server([11.0, 10.0, 10.5]) == pytest.approx(3.0)  # order does not matter
    # C = 4 at 100 ms, 8 items, no lateness: two waves, 0.2 s from first arrival to last answer = C / latency
    waves = [0.0] * 4 + [0.1] * 4
    assert items_per_s_at_server(waves, delay=0.1) == pytest.approx(4 / 0.1)
    assert items_per_s_at_server([5.0], delay=0.1) == pytest.approx(10.0)
    assert items_per_s_at_server([5.0]) == 0.0
    assert items_per_s_at_server([]) == 0.0


def test_max_recorded_covers_the_largest_full_profile_run() -> None:
    """The recorder keeps every arrival of the full profile's biggest throughput and latency runs."""
    latency_n = max(round(c / FULL.latency_s * FULL.latency_run_s) for c in FULL.concurrencies)
    assert max(FULL.throughput_items, latency_n) <= servers.MAX_RECORDED


def test_canned_body_is_a_valid_upload_response() -> None:
    """The bytes every canned server serves validate against the spec's 201 model."""
    asset = UploadResponse.model_validate_json(servers.canned_body()).asset
    assert orjson.loads(servers.canned_body())["asset"]["vector_id"] == asset.vector_id


def test_max_window_counts_the_first_window_too() -> None:
    """The busiest one-second window is found wherever it is, the run's first second included."""
    assert max_window([0.0, 0.1, 0.2, 0.99, 1.5, 2.6]) == 4
    assert max_window([0.0, 1.0, 2.0]) == 1  # half-open: [t, t + 1)
    assert max_window([]) == 0


def test_steady_rate_ignores_the_first_second() -> None:
    """The steady rate counts only arrivals after the first second, over the time they span."""
    burst = [0.0] * 100  # a first-second burst must not count
    steady = [1.0 + i / 50 for i in range(1, 101)]  # then 50/s for 2 s
    assert steady_rate(burst + steady) == pytest.approx(50.0)
    assert steady_rate([0.0]) == 0.0


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_the_rerun_rows_done_results_carry_the_line_fingerprints_ingest_run_computes(tmp_path: Path, fmt: str) -> None:
    """The results the rerun row starts from hold each line's ``row_fp`` under ``ingest run``'s default settings, so
    the rerun skips lines unread (they were salted without ``allow_sources``, and every row was parsed again)."""
    manifest = tmp_path / f"m.{fmt}"
    (data.write_csv_manifest if fmt == "csv" else data.write_manifest)(manifest, 30, 1)
    results = data.write_done_results(tmp_path / "r.jsonl", str(manifest), 30, 1, {"id": "a"}, fmt=fmt)
    options = manifest_options(Settings())
    skip = LineSkip(row_salt(options, KeyDeriver()), None)
    source = ManifestSource.open(str(manifest))
    fps = [skip.fps[row.line] for row in read_manifest(source, options, skip=skip, warn=lambda *a, **k: None)]
    index = load_index(results)
    assert len(fps) == 30 and all(index.has_row(fp) for fp in fps)
