"""Hostile manifests through the real CLI (``ingest validate`` and ``ingest run`` subprocesses, a real fake server).

Each case writes a manifest and the expected fate of every non-blank data line. The process must neither crash
(no traceback) nor hang, and the results file must hold exactly one record per data line, at that line, with the
expected status and reason; a file-level problem (an unusable header) is a clear error naming the file, exit 2,
and nothing is sent.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.logs import json_events
from tests.helpers.processes import (
    FakeServerProcess,
    assert_no_traceback,
    fake_server_process,
    run_worker,
    strict_records,
    worker_env,
)
from tests.helpers.records import media_url

OK = "succeeded"
INJECTIONS = ["=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1:A9)", '=HYPERLINK("http://evil.example/x","y")']


@dataclass(frozen=True)
class Case:
    """A hostile manifest: its file name, its bytes, and per data line ``succeeded`` or ``invalid:<reason part>``."""

    name: str
    filename: str
    write: Callable[[Path], None]
    expected: dict[int, str]
    flags: tuple[str, ...] = ()
    validate: bool = True  # `ingest validate` takes no --require-fal-host, so that case is left out of it
    events: tuple[str, ...] = ()  # log events the run must emit


def _csv(*lines: bytes, header: bytes = b"url,type,prompt") -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_bytes(header + b"\n" + b"".join(line + b"\n" for line in lines))

    return write


def _jsonl(*lines: bytes) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_bytes(b"".join(line + b"\n" for line in lines))

    return write


def _row(prefix: str, i: int, prompt: bytes = b"fine") -> bytes:
    return media_url(i, prefix).encode() + b",image," + prompt


def _obj(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def _wide_header(path: Path) -> None:
    with path.open("w", encoding="utf-8") as file:
        file.write(",".join(["url", "type", *(f"c{i}" for i in range(999_998))]) + "\n")
        file.write(media_url(0, "wide-header") + ",image\n")


CASES = [
    Case(
        "nul-byte-csv",
        "nul.csv",
        _csv(_row("nul", 0), _row("nul", 1, b"bad\0prompt"), _row("nul", 2), b"", _row("nul", 3)),
        {2: OK, 3: "invalid:NUL byte", 4: OK, 6: OK},
    ),
    Case(
        "invalid-utf8-csv",
        "utf8.csv",
        _csv(
            _row("utf8", 0, "café crème brûlée déjà vu à Noël".encode()),  # plainly UTF-8: no other guess
            _row("utf8", 1, b"bad \xff\xfe here"),
            _row("utf8", 2, b'"an open quote \xc3'),  # swallows the rest, which is then read again
            _row("utf8", 3),
            _row("utf8", 4, b"\xed\xa0\x80 a surrogate"),
        ),
        {2: OK, 3: "invalid:not valid UTF-8", 4: "invalid:quoted field", 5: OK, 6: "invalid:not valid UTF-8"},
    ),
    Case(
        "invalid-utf8-and-nul-jsonl",
        "bytes.jsonl",
        _jsonl(
            b'{"url": "' + media_url(0, "bytes").encode() + b'", "type": "image", "prompt": "a\xffb"}',
            b'{"url": "' + media_url(1, "bytes").encode() + b'", "type": "image", "prompt": "a\x00b"}',
            json.dumps(
                {"url": media_url(2, "bytes"), "type": "image", "prompt": "café crème brûlée"}, ensure_ascii=False
            ).encode(),  # plainly UTF-8: no other guess
        ),
        {1: "invalid:not valid UTF-8", 2: "invalid:NUL byte", 3: OK},
    ),
    Case(
        "deeply-nested-json",
        "nested.jsonl",
        _jsonl(
            _obj(url=media_url(0, "nested"), type="image"),
            b"[" * 100_000,
            b'{"url": "'
            + media_url(1, "nested").encode()
            + b'", "type": "image", "tag_ids": '
            + b"[" * 100_000
            + b"]" * 100_000
            + b"}",
            b'{"a": ' * 100_000 + b"1" + b"}" * 100_000,
            _obj(url=media_url(2, "nested"), type="image"),
        ),
        {1: OK, 2: "invalid:JSON", 3: "invalid:JSON", 4: "invalid:JSON", 5: OK},
    ),
    Case(
        "deeply-nested-csv-cell",
        "nested.csv",
        _csv(
            media_url(0, "nested-csv").encode() + b",image,a;b",
            media_url(1, "nested-csv").encode() + b",image," + b"[" * 100_000,
            media_url(2, "nested-csv").encode() + b',image,"[""x""]"',
            header=b"url,type,tag_ids",
        ),
        {2: OK, 3: "invalid:JSON array of strings", 4: OK},
    ),
    Case(
        "numbers-where-strings-belong",
        "numbers.jsonl",
        _jsonl(
            _obj(url=5, type="image"),
            _obj(url=media_url(1, "numbers"), type="image", prompt=12),
            _obj(url=media_url(2, "numbers"), type="image", tag_ids=[1, 2]),
            _obj(url=media_url(3, "numbers"), type=7),
            _obj(url=media_url(4, "numbers"), type="image", favorite="yes"),
            _obj(url=media_url(5, "numbers"), type="image", collection_id=3.5),
            _obj(url=media_url(6, "numbers"), type="image", prompt="12"),
        ),
        {
            1: "invalid:valid string",
            2: "invalid:valid string",
            3: "invalid:valid string",
            4: "invalid:'image'",
            5: "invalid:valid boolean",
            6: "invalid:valid string",
            7: OK,
        },
    ),
    Case(
        "hostile-url-schemes",
        "schemes.jsonl",
        _jsonl(
            _obj(url="javascript:alert(document.cookie)", type="image"),
            _obj(url="file:///etc/passwd", type="image"),
            _obj(url="JaVaScRiPt://%0aalert(1)", type="image"),
            _obj(url="data:image/png;base64,AAAA", type="image"),
            _obj(url="//v3.fal.media/files/no-scheme.png", type="image"),
            _obj(url=media_url(0, "schemes"), type="image"),
        ),
        dict.fromkeys(range(1, 6), "invalid:http or https scheme") | {6: OK},
        flags=("--rehost", "never"),  # registration only: under --rehost auto, file:///etc/passwd is a source
    ),
    Case(
        "non-fal-host-warns",
        "hosts.csv",
        _csv(b"https://example.com/a/1.png,image,x", _row("hosts", 0), b"https://evil.example.net/2.png,image,y"),
        {2: OK, 3: OK, 4: OK},
        events=("manifest.non_fal_host",),
        flags=("--rehost", "never"),  # under --rehost auto these are fetched and rehosted instead
    ),
    Case(
        "non-fal-host-required",
        "hosts-required.csv",
        _csv(b"https://example.com/b/1.png,image,x", _row("hosts-req", 0), b"https://fal.media.evil.net/2.png,image,y"),
        {2: "invalid:not a fal media host", 3: OK, 4: "invalid:not a fal media host"},
        flags=("--require-fal-host", "--rehost", "never"),
        validate=False,
    ),
    Case(
        "million-cell-row",
        "wide-row.csv",
        _csv(_row("wide-row", 0), _row("wide-row", 1) + b"," * 999_997, _row("wide-row", 2)),
        {2: OK, 3: "invalid:1000000 cells", 4: OK},
    ),
]


def _expected_codes(case: Case) -> int:
    return 1 if any(v.startswith("invalid") for v in case.expected.values()) else 0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeServerProcess]:
    """One fault-free fake server for the module (every case uses its own URLs, so keys never collide)."""
    with fake_server_process("none", tmp_path_factory.mktemp("hostile-server")) as running:
        yield running


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_every_hostile_line_is_accounted_for(tmp_path: Path, server: FakeServerProcess, case: Case) -> None:
    """Each non-blank data line gets exactly one record, with the expected status and reason; no crash, no hang."""
    manifest = tmp_path / case.filename
    case.write(manifest)
    results = tmp_path / "results.jsonl"
    code, worker = run_worker(
        [manifest], results, server.url, log_dir=tmp_path, concurrency=4, rate=500, extra=case.flags, timeout=60
    )
    assert_no_traceback(worker)
    assert code == _expected_codes(case), worker.stderr()[-4000:]
    records = strict_records(results)
    assert Counter(r["line"] for r in records) == Counter(case.expected.keys()), "a line has no record, or two"
    for record in records:
        want = case.expected[record["line"]]
        assert record["manifest"] == str(manifest)
        if want == OK:
            assert record["status"] == "succeeded", record
        else:
            assert record["status"] == "invalid", record
            assert want.removeprefix("invalid:") in record["error"]["message"], record["error"]
    events = {e["event"] for e in worker.events()}
    assert set(case.events) <= events


def test_validate_counts_and_names_every_invalid_line(tmp_path: Path) -> None:
    """``ingest validate`` over every hostile manifest counts the rows a run records and names each invalid line."""
    cases = [case for case in CASES if case.validate]
    manifests = []
    for case in cases:
        manifest = tmp_path / case.filename
        case.write(manifest)
        manifests.append(manifest)
    done = subprocess.run(
        [sys.executable, "-m", "ingest", "validate", *map(str, manifests), "--show", "1000", "--rehost", "never"],
        capture_output=True,
        timeout=60,
        env=worker_env(),
        check=False,
    )
    out = done.stdout.decode("utf-8", "replace")
    assert "Traceback" not in done.stderr.decode("utf-8", "replace")
    assert done.returncode == 1, out
    rows = sum(len(case.expected) for case in cases)
    invalid = [
        (manifest, line)
        for manifest, case in zip(manifests, cases, strict=True)
        for line, want in case.expected.items()
        if want != OK
    ]
    assert out.startswith(f"{rows} rows: {rows - len(invalid)} valid, {len(invalid)} invalid, 0 duplicate\n"), out[:500]
    named = {line.strip().split(": ", 1)[0] for line in out.splitlines() if line.startswith("  ")}
    assert named == {f"{manifest}:{line}" for manifest, line in invalid}


def test_csv_injection_strings_are_uploaded_verbatim(tmp_path: Path, server: FakeServerProcess) -> None:
    """Spreadsheet formulas in a prompt are data: the server receives them byte for byte, nothing evaluates them."""
    manifest = tmp_path / "formulas.csv"
    _csv(*(_row("formula", i, b'"' + p.replace('"', '""').encode() + b'"') for i, p in enumerate(INJECTIONS)))(manifest)
    results = tmp_path / "results.jsonl"
    code, worker = run_worker([manifest], results, server.url, log_dir=tmp_path, concurrency=4, rate=500)
    assert code == 0, worker.stderr()[-4000:]
    sent = {a["asset"]["url"]: a["asset"]["prompt"] for a in server.assets()}
    assert [sent[media_url(i, "formula")] for i in range(len(INJECTIONS))] == INJECTIONS
    recorded = {r["line"]: r["item"]["prompt"] for r in strict_records(results)}
    assert [recorded[i + 2] for i in range(len(INJECTIONS))] == INJECTIONS


@pytest.mark.parametrize(
    ("filename", "write", "needle"),
    [
        ("wide-header.csv", _wide_header, "the header row cannot be read"),
        ("no-url.csv", lambda p: p.write_bytes(b"link,type\nhttps://v3.fal.media/x.png,image\n"), "no 'url' column"),
        ("empty.csv", lambda p: p.write_bytes(b""), "no header row"),
        ("dup.csv", lambda p: p.write_bytes(b"url,url\nhttps://v3.fal.media/x.png,a\n"), "duplicate column"),
    ],
    ids=["million-column-header", "no-url-column", "empty-file", "duplicate-columns"],
)
def test_unusable_header_is_a_clear_file_level_error(
    tmp_path: Path, server: FakeServerProcess, filename: str, write: Callable[[Path], None], needle: str
) -> None:
    """A header that cannot be used stops the run before anything is sent: exit 2, the file and reason named."""
    manifest = tmp_path / filename
    write(manifest)
    results = tmp_path / "results.jsonl"
    before = server.stats()["requests"]
    code, worker = run_worker([manifest], results, server.url, log_dir=tmp_path, timeout=60)
    assert_no_traceback(worker)
    assert code == 2, worker.stderr()[-4000:]
    message = worker.stderr()
    assert f"ingest: error: {manifest}" in message
    assert needle in message
    assert len(message) < 10_000  # a million column names are not echoed back
    assert strict_records(results) == []
    assert server.stats()["requests"] == before


RSS_WRAPPER = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[1:])
print(f"maxrss_kib={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}", flush=True)
sys.exit(code)
"""
HUGE_LINE_BYTES = 100 * 1024 * 1024
RSS_LIMIT_KIB = 200 * 1024


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_100mb_line_is_one_invalid_row_in_bounded_memory(tmp_path: Path, server: FakeServerProcess, fmt: str) -> None:
    """A single 100 MB line is skipped in chunks: one invalid record for it, neighbours uploaded, peak RSS bounded."""
    manifest = tmp_path / f"huge.{fmt}"
    try:
        _write_huge(manifest, fmt)
        results = tmp_path / "results.jsonl"
        worker_args = [sys.executable, "-m", "ingest", "run", str(manifest), "--results", str(results)]
        worker_args += ["--base-url", server.url, "--log-format", "json", "--progress", "off"]
        done = subprocess.run(
            [sys.executable, "-c", RSS_WRAPPER, *worker_args],
            capture_output=True,
            timeout=60,
            env=worker_env(),
            check=False,
        )
    finally:
        manifest.unlink(missing_ok=True)
    stderr = done.stderr.decode("utf-8", "replace")
    assert "Traceback" not in stderr, stderr[-4000:]
    assert done.returncode == 1, stderr[-4000:]
    peak = int(done.stdout.decode().rsplit("maxrss_kib=", 1)[1])
    print(f"\n[100 MB {fmt} line] worker peak RSS {peak / 1024:.0f} MiB")
    assert peak < RSS_LIMIT_KIB
    records = strict_records(results)
    first = 2 if fmt == "csv" else 1
    by_line = {r["line"]: r for r in records}
    assert sorted(by_line) == [first, first + 1, first + 2]
    assert len(records) == 3
    assert by_line[first]["status"] == by_line[first + 2]["status"] == "succeeded"
    assert by_line[first + 1]["status"] == "invalid"
    assert "longer than" in by_line[first + 1]["error"]["message"]
    assert any(e["event"] == "row.invalid" for e in json_events(stderr))


def _write_huge(path: Path, fmt: str) -> None:
    """Neighbour, a 100 MB line, neighbour; written in 1 MiB pieces, never held whole."""
    chunk = b"A" * (1 << 20)
    with path.open("wb") as file:
        if fmt == "csv":
            file.write(b"url,type,prompt\n" + _row("huge-csv", 0) + b"\n")
            file.write(media_url(1, "huge-csv").encode() + b",image,")
        else:
            file.write(_obj(url=media_url(0, "huge-jsonl"), type="image") + b"\n")
            file.write(b'{"url": "' + media_url(1, "huge-jsonl").encode() + b'", "type": "image", "prompt": "')
        for _ in range(HUGE_LINE_BYTES // len(chunk)):
            file.write(chunk)
        file.write(b"\n" if fmt == "csv" else b'"}\n')
        file.write(
            _row("huge-csv", 2) + b"\n" if fmt == "csv" else _obj(url=media_url(2, "huge-jsonl"), type="image") + b"\n"
        )


UNCLOSED_LINES = 8000


def test_quote_opened_on_every_line_is_read_in_linear_time(tmp_path: Path) -> None:
    """Every line opening a quote that never closes costs one invalid row each, read in linear time, not a hang:
    no slower than a few times the same number of clean lines validated in the same test."""
    clean, manifest = tmp_path / "clean.csv", tmp_path / "unclosed.csv"
    # From the start of a record, `png"` is a literal quote mid-field and `,"p` opens a quoted field; from inside a
    # quoted field, `png"` closes it and `,"p` opens another. So each line starts a record that runs to the end.
    with manifest.open("w", encoding="utf-8") as file, clean.open("w", encoding="utf-8") as good:
        file.write("url,type,prompt\n")
        good.write("url,type,prompt\n")
        for i in range(UNCLOSED_LINES):
            file.write(f'{media_url(i, "unclosed")}",image,"p{i}\n')
            good.write(f"{media_url(i, 'clean')},image,p{i}\n")

    def validate(path: Path) -> tuple[subprocess.CompletedProcess[bytes], float]:
        started = time.monotonic()
        argv = [sys.executable, "-m", "ingest", "validate", str(path), "--show", "3"]
        try:
            done = subprocess.run(argv, capture_output=True, timeout=120, env=worker_env(), check=False)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"validating {UNCLOSED_LINES} lines of {path.name} took more than 120 s") from None
        return done, time.monotonic() - started

    _, clean_s = validate(clean)
    done, unclosed_s = validate(manifest)
    assert unclosed_s < 4 * clean_s + 2, f"unclosed quotes {unclosed_s:.1f} s vs clean lines {clean_s:.1f} s"
    out = done.stdout.decode("utf-8", "replace")
    assert done.returncode == 1, out
    assert out.startswith(f"{UNCLOSED_LINES} rows: ")
