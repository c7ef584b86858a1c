"""How the night went, through the real CLI: run records in the results file, ``ingest report``'s verdict for a
complete, an interrupted, an aborted and a killed run, ``--summary-json``, JSON logs without plain text, ``ingest
failed --format csv``, and the warnings for a renamed manifest and a foreign results file."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import anyio
import orjson
import pytest

from ingest.commands.report import build_report, render_text
from ingest.fakeserver import FakeServer, FakeServerConfig, FaultConfig, running_fake_server
from ingest.manifest.source import ManifestSource, read_manifest
from ingest.results.record import Result, Status, error_dict
from ingest.results.runlog import RUN_STARTED, run_record_line
from tests.helpers import KEY, ROOT
from tests.helpers.cli import clean_env, run_cli
from tests.helpers.records import media_rows, read_results, run_records, write_jsonl

pytestmark = pytest.mark.anyio


def run_args(manifest: Path, results: Path | None, server: FakeServer, *extra: str) -> list[str]:
    where = ["--results", str(results)] if results is not None else []
    return ["run", str(manifest), *where, "--base-url", server.url, "--rate", "500", "--log-format", "json", *extra]


async def test_a_complete_run_records_its_start_and_end_and_the_report_says_completed(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """A finished run writes ``run_started`` first and ``run_ended`` last; the report opens with its verdict."""
    manifest = write_jsonl(
        tmp_path / "media.jsonl", [*media_rows(12), {"url": "ftp://media.example/a.png", "type": "image"}]
    )
    results = tmp_path / "results.jsonl"
    done = await run_cli(*run_args(manifest, results, fake_server))
    assert done.returncode == 1, done.stderr  # the invalid row

    started, ended = run_records(results)
    lines = results.read_bytes().splitlines()
    assert orjson.loads(lines[0])["record"] == "run_started" and orjson.loads(lines[-1])["record"] == "run_ended"
    assert started["manifests"][0]["path"] == str(manifest) and started["manifests"][0]["size"] > 0
    assert started["key_fields"] == ["url"] and started["key_namespace"] is None
    assert ended["outcome"] == "completed" and ended["exit_code"] == 1 and ended["run_id"] == started["run_id"]
    assert ended["counts"]["total"] == 13 and ended["counts"]["succeeded"] == 12

    report = await run_cli("report", str(results))
    first = report.stdout.splitlines()
    assert first[0] == "Last run: completed, exit 1"
    assert first[2].strip() == "13 manifest rows: 12 done, 0 failed, 1 invalid, 0 still pending"

    rerun = await run_cli(*run_args(manifest, results, fake_server))  # the resume index skips run records
    assert rerun.returncode == 1 and fake_server.ledger.stats()["created"] == 12
    assert rerun.event("run.summary")["requests"] == 0


async def test_report_of_an_interrupted_run_says_interrupted_with_what_is_pending(tmp_path: Path) -> None:
    """SIGINT mid-run: the run drains, records ``interrupted`` (SIGINT) with exit 130; the report says so and how
    many rows are still pending."""
    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(200))
    results = tmp_path / "results.jsonl"
    async with running_fake_server(FakeServerConfig(faults=FaultConfig(base_latency_s=0.05))) as server:
        args = run_args(manifest, results, server)
        args[args.index("500")] = "20"
        process = await anyio.open_process(
            [sys.executable, "-m", "ingest", *args], env=clean_env(FAL_KEY=KEY), cwd=ROOT
        )
        async with process:
            with anyio.fail_after(30):
                while not results.exists() or len(read_results(results)) < 10:  # noqa: ASYNC110 (a file)
                    await anyio.sleep(0.05)
                process.send_signal(signal.SIGINT)
                assert await process.wait() == 130

    ended = run_records(results)[-1]
    assert ended["outcome"] == "interrupted" and ended["reason"] == "SIGINT" and ended["exit_code"] == 130
    text = render_text(build_report([results]))
    assert text.startswith("Last run: interrupted (SIGINT), exit 130")
    pending = 200 - len(read_results(results))
    assert f"{pending:,} still pending" in text and "run the same command to continue" in text


async def test_report_of_an_aborted_run_says_aborted_and_why(tmp_path: Path) -> None:
    """Credentials revoked mid-run: exit 3, the run record says ``aborted`` with the reason; the report too."""
    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(60))
    results = tmp_path / "results.jsonl"
    async with running_fake_server(FakeServerConfig(faults=FaultConfig(revoke_after=20))) as server:
        done = await run_cli(*run_args(manifest, results, server, "--concurrency", "2"))
    assert done.returncode == 3, done.stderr

    ended = run_records(results)[-1]
    assert ended["outcome"] == "aborted" and ended["exit_code"] == 3 and "403" in ended["reason"]
    report = json.loads((await run_cli("report", str(results), "--json")).stdout)["verdict"]
    assert report["outcome"] == "aborted" and report["exit_code"] == 3
    assert report["rows_total"] == 60 and report["pending"] == 60 - report["done"] > 0


def test_report_of_a_killed_run_says_it_did_not_finish(tmp_path: Path) -> None:
    """A ``run_started`` with no ``run_ended`` (SIGKILL) is "did not finish", with no exit code."""
    results = tmp_path / "results.jsonl"
    ok = Result("k1", "m.jsonl", 1, Status.SUCCEEDED, {"url": "u", "type": "image"}, run_id="r1")
    results.write_bytes(run_record_line(RUN_STARTED, run_id="r1", started_at="2026-12-02T02:30:00.000Z") + ok.to_line())
    text = render_text(build_report([results]))
    assert text.startswith("Last run: did not finish (no end record: the process was killed, or is still running)")


async def test_summary_json_and_json_logs_without_plain_text(tmp_path: Path, fake_server: FakeServer) -> None:
    """``--summary-json PATH`` writes the final summary as one document; with JSON logs every stderr line is JSON
    (the human summary is the ``run.summary_text`` event)."""
    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(5))
    summary_path = tmp_path / "summary.json"
    done = await run_cli(*run_args(manifest, tmp_path / "r.jsonl", fake_server, "--summary-json", str(summary_path)))
    assert done.returncode == 0, done.stderr

    summary = json.loads(summary_path.read_text())
    assert summary["outcome"] == "completed" and summary["exit_code"] == 0 and summary["succeeded"] == 5
    assert summary["pending"] == 0 and summary["started_at"] and summary["duration_s"] is not None
    assert all(line.startswith("{") for line in done.stderr.splitlines() if line.strip())
    assert "5 succeeded" in done.event("run.summary_text")["text"][0]

    to_stdout = await run_cli(*run_args(manifest, tmp_path / "r.jsonl", fake_server, "--summary-json", "-"))
    assert json.loads(to_stdout.stdout)["skipped"] == 5


async def test_failed_as_csv_reads_back_as_a_manifest_with_the_keys(tmp_path: Path) -> None:
    """``ingest failed --format csv`` writes a spreadsheet-friendly CSV that ``ingest run`` reads unchanged."""
    results = tmp_path / "results.jsonl"
    body = {"url": "https://v3b.fal.media/files/b/x/1.png", "type": "image", "tag_ids": ["a", "b"], "favorite": True}
    error = error_dict("validation_error", "bad", retryable=False)
    results.write_bytes(Result("key-1", "m.jsonl", 1, Status.FAILED, body, error=error, attempts=1).to_line())
    out = tmp_path / "failed.csv"

    done = await run_cli("failed", str(results), "-o", str(out), "--format", "csv")

    assert done.returncode == 0, done.stderr
    header, _row = out.read_text().splitlines()
    assert header == "url,type,prompt,collection_id,favorite,tag_ids,idempotency_key"
    rows = list(read_manifest(ManifestSource.open(str(out))))
    assert rows[0].request is not None and rows[0].idempotency_key == "key-1"
    assert rows[0].request.body() == body  # null cells are empty: absent, as the spec defaults them


async def test_a_renamed_manifest_warns_that_the_earlier_results_file_is_elsewhere(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """The same manifest under a new name gets a new default results file: the run warns, naming the earlier
    results file (beside it) and that its first answers are replays."""
    manifest = write_jsonl(tmp_path / "media.jsonl", media_rows(30))
    first = await run_cli(*run_args(manifest, None, fake_server))
    assert first.returncode == 0, first.stderr
    renamed = manifest.rename(tmp_path / "tonight.jsonl")

    second = await run_cli(*run_args(renamed, None, fake_server))

    assert second.returncode == 0, second.stderr
    assert second.event("results.elsewhere")["earlier"] == str(tmp_path / "media.results.jsonl")
    assert second.event("results.replays")["replays"] == 20


async def test_a_foreign_results_file_warns_and_strict_refuses(tmp_path: Path, fake_server: FakeServer) -> None:
    """A results file made for another manifest warns (``results.foreign``); other key settings too; ``--strict``
    refuses with exit 2 before anything is sent."""
    results = tmp_path / "results.jsonl"
    media = write_jsonl(tmp_path / "media.jsonl", media_rows(5))
    assert (await run_cli(*run_args(media, results, fake_server))).returncode == 0
    other = write_jsonl(tmp_path / "other.jsonl", media_rows(5, prefix="o"))

    warned = await run_cli(*run_args(other, results, fake_server))
    problem = warned.event("results.foreign")["problem"]
    assert "other.jsonl is not one this results file was made for" in problem

    requests = fake_server.ledger.stats()["requests"]
    refused = await run_cli(*run_args(media, results, fake_server, "--strict", "--key-namespace", "again"))
    assert refused.returncode == 2, refused.stderr
    assert "key settings differ" in refused.stderr
    assert fake_server.ledger.stats()["requests"] == requests


def test_per_minute_throughput_divides_a_partial_minute_by_its_real_length(tmp_path: Path) -> None:
    """30 records finished within 10 s of one minute are 3/s in that minute's row, not 30/60."""
    results = tmp_path / "results.jsonl"
    records = [  # 3 a second for 10 s: the first at :00.000, the last at :09.600
        Result(f"k{i}", "m.jsonl", i + 1, Status.SUCCEEDED, {"url": "u", "type": "image"}, run_id="r1")
        for i in range(30)
    ]
    for i, record in enumerate(records):
        record.finished_at = f"2026-12-02T10:00:{i // 3:02d}.{(i % 3) * 300:03d}Z"
    results.write_bytes(b"".join(record.to_line() for record in records))
    section = render_text(build_report([results])).split("Throughput")[1].split("\n\n")[0]
    row = next(line for line in section.splitlines() if line.strip().startswith("2026-12-02T10:00Z"))
    assert float(row.split()[-1]) == pytest.approx(30 / 9.6, rel=0.01)
