"""A record is true and the key stays secret (issue 9, findings 1, 2 and 12), through the real CLI against a
hostile server on loopback: only a 201 with an asset is a success; the key never reaches the results file or
``ingest report``, however a server echoes it; a redirect or a 408 is retryable, never a permanent failure.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.helpers.hostile_server import (
    KEY,
    ROWS,
    Answer,
    Hit,
    Reply,
    asset,
    asset_reply,
    error_reply,
    hostile_server,
    ingest,
    json_escaped,
    records,
    run_args,
    write_manifest,
)

NOT_AN_ASSET = {
    "200 html": Reply(200, b"<html><body>OK</body></html>", content_type="text/html"),
    "202 accepted": Reply(202, b'{"status":"queued"}'),
    "204 no content": Reply(204, b""),
    "201 empty": Reply(201, b""),
    "201 html": Reply(201, b"<html>created</html>", content_type="text/html"),
    "201 id only": Reply(201, b'{"id":"a1"}'),
    "201 asset null": Reply(201, b'{"asset":null}'),
    "201 no vector_id": Reply(201, b'{"asset":{"url":"https://v3.fal.media/x.png","type":"image"}}'),
}


@pytest.mark.parametrize("reply", NOT_AN_ASSET.values(), ids=NOT_AN_ASSET.keys())
def test_an_answer_that_is_not_a_201_asset_is_never_a_success(tmp_path: Path, reply: Reply) -> None:
    """A 2xx that is not a 201 with an asset is retried with the same key, recorded as a retryable failure when
    the attempts run out (exit 1), and sent again by the next run, which then succeeds."""
    manifest, results = write_manifest(tmp_path / "m.jsonl"), tmp_path / "r.jsonl"
    with hostile_server(lambda hit: reply) as server:
        first = ingest(*run_args(manifest, results, server.url))
        hits = list(server.hits)
    assert first.code == 1, first.stderr[-3000:]
    failed = records(results)
    assert [r["status"] for r in failed] == ["failed"] * ROWS
    assert {r["error"]["type"] for r in failed} == {"unexpected_response"}
    assert all(r["error"]["retryable"] and r["asset"] is None for r in failed)
    assert len(hits) == 3 * ROWS  # --max-attempts 3, every attempt with the item's one key
    assert {len({h.key for h in hits if h.body["url"] == r["item"]["url"]}) for r in failed} == {1}

    with hostile_server(lambda hit: asset_reply(hit.body)) as good:
        second = ingest(*run_args(manifest, results, good.url))
        assert len(good.hits) == ROWS
        assert {h.key for h in good.hits} == {r["key"] for r in failed}
    assert second.code == 0, second.stderr[-3000:]
    assert [r["status"] for r in records(results)[ROWS:]] == ["succeeded"] * ROWS


def test_a_201_asset_missing_optional_fields_is_a_success(tmp_path: Path) -> None:
    """A 201 whose asset has a vector_id but lacks other fields is kept as a success (with a warning)."""
    manifest, results = write_manifest(tmp_path / "m.jsonl", 1), tmp_path / "r.jsonl"
    with hostile_server(lambda hit: Reply(201, b'{"asset":{"vector_id":"v-1","type":"image"}}')) as server:
        done = ingest(*run_args(manifest, results, server.url))
    assert done.code == 0, done.stderr[-3000:]
    assert records(results)[0]["asset"] == {"vector_id": "v-1", "type": "image"}
    assert done.events("upload.unexpected_response")


def echo_in_request_id(hit: Hit) -> Reply:
    return Reply(502, b"bad gateway", {"X-Request-Id": hit.headers.get("Authorization", "")}, content_type="text/plain")


def escaped_in_error(hit: Hit) -> Reply:
    message = f"bad key {json_escaped(KEY)}"
    body = b'{"error":{"type":"validation_error","message":"' + message.encode() + b'"}}'
    return Reply(400, body)


def escaped_in_asset(hit: Hit) -> Reply:
    text = orjson.dumps({"asset": asset(hit.body, title="TITLE", source="SOURCE")}).decode()
    text = text.replace("TITLE", json_escaped(KEY)).replace("SOURCE", "Key " + json_escaped(KEY))
    return Reply(201, text.encode(), {"X-Request-Id": f"req {hit.headers['Authorization']}"})


LEAKS = {
    "X-Request-Id echo": echo_in_request_id,
    "escaped in error": escaped_in_error,
    "escaped in asset": escaped_in_asset,
}


@pytest.mark.parametrize("answer", LEAKS.values(), ids=LEAKS.keys())
def test_the_key_echoed_back_never_reaches_the_results_file_or_report(tmp_path: Path, answer: Answer) -> None:
    """A server echoing the key in X-Request-Id, or JSON-escaped in an error message or a 201 asset, gets it
    masked after decoding: it is in no record, no log line, and not in ``ingest report``."""
    manifest, results = write_manifest(tmp_path / "m.jsonl"), tmp_path / "r.jsonl"
    with hostile_server(answer) as server:
        done = ingest(*run_args(manifest, results, server.url))
    report = ingest("report", results)
    report_json = ingest("report", results, "--json", "--top", "20")
    assert len(records(results)) == ROWS
    for where, text in {
        "results": results.read_text(),
        "stderr": done.stderr,
        "stdout": done.stdout,
        "report": report.stdout + report.stderr,
        "report --json": report_json.stdout,
    }.items():
        assert KEY not in text, f"the key leaked into {where}"
    assert "***" in results.read_text()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed_and_recorded_as_a_retryable_redirect(tmp_path: Path, status: int) -> None:
    """A 3xx is never followed (the key stays home); it is its own retryable error type naming the Location, so a
    rerun sends the item again."""
    manifest, results = write_manifest(tmp_path / "m.jsonl", 1), tmp_path / "r.jsonl"
    location = "https://elsewhere.example/v1/assets/uploads"
    with hostile_server(lambda hit: Reply(status, b"", {"Location": location})) as server:
        done = ingest(*run_args(manifest, results, server.url))
        assert len(server.hits) == 3
    assert done.code == 1, done.stderr[-3000:]
    (record,) = records(results)
    assert record["error"]["type"] == "redirect"
    assert record["error"]["retryable"] is True
    assert location in record["error"]["message"]
    with hostile_server(lambda hit: asset_reply(hit.body)) as good:
        assert ingest(*run_args(manifest, results, good.url)).code == 0
        assert len(good.hits) == 1


def test_408_is_retried(tmp_path: Path) -> None:
    """A 408 Request Timeout is retried with the same key like a 5xx, then succeeds."""
    manifest, results = write_manifest(tmp_path / "m.jsonl", 1), tmp_path / "r.jsonl"

    def answer(hit: Hit) -> Reply:
        return error_reply(408, "request timeout", "timeout") if hit.attempt == 1 else asset_reply(hit.body)

    with hostile_server(answer) as server:
        done = ingest(*run_args(manifest, results, server.url))
        assert [h.attempt for h in server.hits] == [1, 2]
    assert done.code == 0, done.stderr[-3000:]
    assert records(results)[0]["status"] == "succeeded"


ESCAPES = "\x1b]0;pwned\x07\x1b[2J\x1b]8;;https://evil.example/\x07click\x1b]8;;\x07\x1b]52;c;ZXZpbA==\x07\x9b31m\u202e"


@pytest.mark.parametrize("status", [400, 401])
def test_server_text_cannot_drive_the_terminal(tmp_path: Path, status: int) -> None:
    """Window titles, clear-screen, OSC 8 links and OSC 52 clipboard writes in a server's message reach neither
    the run's summary (its ``aborted:`` line) nor ``ingest report --top``: control characters are shown escaped."""
    manifest, results = write_manifest(tmp_path / "m.jsonl"), tmp_path / "r.jsonl"
    error_type = "authorization_error" if status == 401 else "validation_error"
    with hostile_server(lambda hit: error_reply(status, f"nope {ESCAPES}", error_type)) as server:
        done = ingest(*run_args(manifest, results, server.url))
    report = ingest("report", results, "--top", "5") if results.exists() else None
    printed = done.stderr + done.stdout + (report.stdout + report.stderr if report else "")
    for char in "\x1b\x07\x9b\u202e":
        assert char not in printed
    if status == 401:
        assert "aborted:" in done.stderr and "\\x1b]0;pwned" in done.stderr
    else:
        assert report is not None and "\\x1b]52;c;" in report.stdout
