"""Manifest readers: real CSV/JSONL files (plain, gzip, stdin) in, one ``ManifestRow`` per data row out."""

from __future__ import annotations

import csv
import gzip
import io
import pickle
import sys
import tracemalloc
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from ingest.errors import ConfigError, ManifestError
from ingest.manifest.cells import TYPES_EXPECTED
from ingest.manifest.records import NO_URL
from ingest.manifest.rows import TYPE_BY_EXTENSION
from ingest.manifest.source import (
    KNOWN_FIELDS,
    ManifestOptions,
    ManifestRow,
    ManifestSource,
    RowError,
    count_rows,
    preflight,
    read_manifest,
)
from ingest.models import ASSET_TYPES, UploadRequest

PNG = "https://cdn.example.com/media/a.png"
MP4 = "https://cdn.example.com/media/b.mp4"
HEADER = "url,type,prompt,collection_id,favorite,tag_ids,idempotency_key"


class WarnSpy:
    """Records ``warn(event, **fields)`` calls (``manifest.detected``, said of every manifest, apart)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.detected: list[dict[str, Any]] = []

    def __call__(self, event: str, **fields: Any) -> None:
        if event == "manifest.detected":
            self.detected.append(fields)
        else:
            self.calls.append((event, fields))


UTF8 = ManifestOptions(encoding="utf-8")  # no detection: the bytes that are not UTF-8 make their rows invalid


def write(tmp_path: Path, name: str, content: str | bytes) -> ManifestSource:
    path = tmp_path / name
    data = content.encode() if isinstance(content, str) else content
    path.write_bytes(gzip.compress(data) if name.lower().endswith(".gz") else data)
    return ManifestSource.open(str(path))


def read(
    source: ManifestSource, options: ManifestOptions | None = None, warn: WarnSpy | None = None
) -> list[ManifestRow]:
    return list(read_manifest(source, options or ManifestOptions(), warn=warn or WarnSpy()))


def errors(rows: Iterable[ManifestRow]) -> list[tuple[int, str | None, str] | None]:
    return [(r.line, r.error.field, r.error.message) if r.error else None for r in rows]


def jsonl(*objects: object) -> str:
    return "".join(orjson.dumps(obj).decode() + "\n" for obj in objects)


def one(source: ManifestSource, options: ManifestOptions | None = None) -> ManifestRow:
    rows = read(source, options)
    assert len(rows) == 1, rows
    return rows[0]


# --- sources ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "format_", "gz"),
    [
        ("m.csv", "csv", False),
        ("m.jsonl", "jsonl", False),
        ("m.ndjson", "jsonl", False),
        ("m.csv.gz", "csv", True),
        ("m.JSONL.GZ", "jsonl", True),
        ("m.ndjson.gz", "jsonl", True),
    ],
)
def test_format_and_gzip_come_from_the_extension(tmp_path: Path, name: str, format_: str, gz: bool) -> None:
    """The format is taken from .csv/.jsonl/.ndjson (any case) and gzip from a .gz suffix."""
    source = write(tmp_path, name, "")
    assert (source.format, source.gzip, source.name) == (format_, gz, str(tmp_path / name))


def test_gzip_is_detected_from_magic_bytes(tmp_path: Path) -> None:
    """A gzip-compressed file without a .gz suffix is still read as gzip."""
    path = tmp_path / "m.csv"
    path.write_bytes(gzip.compress(f"url,type\n{PNG},image\n".encode()))
    source = ManifestSource.open(str(path))
    assert source.gzip
    assert [r.request for r in read(source)] == [UploadRequest(url=PNG, type="image")]


def test_explicit_format_overrides_the_extension(tmp_path: Path) -> None:
    """``format=`` wins over the extension, and makes any extension acceptable."""
    path = tmp_path / "export.txt"
    path.write_text(jsonl({"url": PNG}))
    source = ManifestSource.open(str(path), format="jsonl")
    assert source.format == "jsonl"
    assert read(source)[0].request == UploadRequest(url=PNG, type="image")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("m.xlsx", "unknown manifest format"),
        ("missing.csv", "no such file"),
        ("notgz.csv.gz", "not gzip-compressed"),
    ],
)
def test_unusable_sources_raise_manifest_error_naming_the_file(tmp_path: Path, name: str, message: str) -> None:
    """An unknown extension, a missing file or a fake .gz is a ManifestError that names the file."""
    if name != "missing.csv":
        (tmp_path / name).write_text("url\n")
    with pytest.raises(ManifestError, match=message) as info:
        ManifestSource.open(str(tmp_path / name))
    assert name in str(info.value)


def test_a_directory_is_not_a_manifest(tmp_path: Path) -> None:
    """Opening a directory is a ManifestError, not an IsADirectoryError."""
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(ManifestError, match="directory"):
        ManifestSource.open(str(tmp_path / "d.csv"))


def test_stdin_format_is_given_or_read_from_the_content() -> None:
    """``-`` without a format is decided by content when read; with one it is that format; both are ``<stdin>``."""
    assert ManifestSource.open("-").format is None
    source = ManifestSource.open("-", format="csv")
    assert (source.name, source.format, source.gzip) == ("<stdin>", "csv", False)


@pytest.mark.parametrize("format_", ["csv", "jsonl"])
def test_stdin_is_read_from_its_binary_buffer(monkeypatch: pytest.MonkeyPatch, format_: str) -> None:
    """Rows are read from ``sys.stdin.buffer`` and name the manifest ``<stdin>``."""
    data = f"url\n{PNG}\n" if format_ == "csv" else jsonl({"url": PNG})
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data.encode())))
    source = ManifestSource.open("-", format=format_)
    rows = read(source)
    assert [(r.manifest, r.line, r.request) for r in rows] == [
        ("<stdin>", 2 if format_ == "csv" else 1, UploadRequest(url=PNG, type="image"))
    ]


def test_stdin_is_neither_preflighted_nor_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """preflight does nothing and count_rows answers None for stdin, which can only be read once."""
    monkeypatch.setattr(sys, "stdin", None)
    source = ManifestSource.open("-", format="csv")
    preflight(source)
    assert count_rows(source) is None


@pytest.mark.parametrize("name", ["m.csv.gz", "m.jsonl.gz"])
def test_gzip_manifests_are_read(tmp_path: Path, name: str) -> None:
    """.csv.gz and .jsonl.gz files yield the same rows as their plain versions."""
    text = f"url,type\n{PNG},image\n{MP4},\n" if ".csv" in name else jsonl({"url": PNG, "type": "image"}, {"url": MP4})
    rows = read(write(tmp_path, name, text))
    assert [r.request for r in rows] == [UploadRequest(url=PNG, type="image"), UploadRequest(url=MP4, type="video")]


def test_a_truncated_gzip_file_yields_its_rows_then_a_manifest_error(tmp_path: Path) -> None:
    """A gzip stream that breaks part way gives the rows before the break, then a ManifestError naming the file."""
    body = jsonl(*({"url": f"https://h.example/{i}.png"} for i in range(2000))).encode()
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(gzip.compress(body)[:-200])
    seen: list[ManifestRow] = []
    with pytest.raises(ManifestError, match=r"cut\.jsonl\.gz"):
        seen.extend(read_manifest(ManifestSource.open(str(path)), warn=WarnSpy()))
    assert len(seen) > 1000 and all(r.request for r in seen)


def test_the_public_interface_is_exported() -> None:
    """``ingest.manifest.source.__all__`` lists exactly the interface the pipeline is written against."""
    import ingest.manifest.source

    expected = {"ManifestFormat", "KNOWN_FIELDS", "ManifestSource", "ManifestOptions", "RowError", "ManifestRow"}
    expected |= {"read_manifest", "preflight", "count_rows"}
    assert set(ingest.manifest.source.__all__) == expected
    assert all(hasattr(ingest.manifest.source, name) for name in expected)


# --- CSV structure ------------------------------------------------------------------------------------


def test_csv_with_bom_and_crlf_reads_like_plain_csv(tmp_path: Path) -> None:
    """A UTF-8 BOM before the header and CRLF line endings change nothing."""
    source = write(tmp_path, "m.csv", f"\ufeffurl,type,prompt\r\n{PNG},image,hi\r\n")
    assert one(source).request == UploadRequest(url=PNG, type="image", prompt="hi")


def test_quoted_commas_quotes_and_newlines_keep_physical_line_numbers(tmp_path: Path) -> None:
    """Quoted fields keep commas, doubled quotes and newlines; each row reports the line it starts on."""
    text = (
        "url,type,prompt\n"  # line 1
        f'{PNG},image,"a, b ""c"""\n'  # line 2
        f'{PNG},image,"first\nsecond\r\nthird"\n'  # lines 3-5
        f"{MP4},video,plain\n"  # line 6
    )
    rows = read(write(tmp_path, "m.csv", text))
    assert [(r.line, r.request.prompt if r.request else None) for r in rows] == [
        (2, 'a, b "c"'),
        (3, "first\nsecond\r\nthird"),
        (6, "plain"),
    ]


def test_blank_and_whitespace_only_lines_are_skipped(tmp_path: Path) -> None:
    """Blank and whitespace-only lines are not rows, and do not shift the line numbers of rows."""
    text = f"\nurl,type\n\n{PNG},image\n   \n\t\r\n{MP4},video\n\n"
    rows = read(write(tmp_path, "m.csv", text))
    assert [(r.line, r.error) for r in rows] == [(4, None), (7, None)]


def test_empty_cells_are_absent_fields(tmp_path: Path) -> None:
    """An empty cell leaves its field unset, so the model default applies."""
    row = one(write(tmp_path, "m.csv", f"{HEADER}\n{PNG},image,,,,,\n"))
    assert row.request == UploadRequest(url=PNG, type="image")
    assert row.request.prompt is None and row.idempotency_key is None


@pytest.mark.parametrize(
    ("cells", "count"),
    [(f"{PNG},image,x,extra", 4), (f"{PNG},image", 2)],
)
def test_rows_with_the_wrong_number_of_cells_are_invalid(tmp_path: Path, cells: str, count: int) -> None:
    """A row with more or fewer cells than the header is invalid and says both counts."""
    rows = read(write(tmp_path, "m.csv", f"url,type,prompt\n{cells}\n{PNG},image,ok\n"))
    assert errors(rows) == [(2, None, f"row has {count} cells, header has 3"), None]
    assert rows[0].raw is not None and rows[0].raw["url"] == PNG


@pytest.mark.parametrize(
    ("cell", "tags"),
    [
        ('"[""a"",""b""]"', ["a", "b"]),
        ("a;b", ["a", "b"]),
        (" a ; ;b ;", ["a", "b"]),
        ('"[]"', []),
        (";", []),
        ("solo", ["solo"]),
    ],
)
def test_tag_ids_are_a_json_array_or_a_semicolon_list(tmp_path: Path, cell: str, tags: list[str]) -> None:
    """tag_ids accepts a JSON array of strings or ``a;b`` (items stripped, empty items dropped)."""
    row = one(write(tmp_path, "m.csv", f"url,type,tag_ids\n{PNG},image,{cell}\n"))
    assert row.request is not None and row.request.tag_ids == tags


@pytest.mark.parametrize("cell", ['"[1,2]"', '"[""a"""', '"[{""a"":1}]"', "[a;b]"])
def test_tag_ids_that_look_like_json_but_are_not_string_arrays_are_invalid(tmp_path: Path, cell: str) -> None:
    """A tag_ids cell starting with ``[`` must be a JSON array of strings."""
    row = one(write(tmp_path, "m.csv", f"url,type,tag_ids\n{PNG},image,{cell}\n"))
    assert row.error is not None and row.error.field == "tag_ids"


@pytest.mark.parametrize(
    ("cell", "value"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("Yes", True),
        ("false", False),
        ("0", False),
        ("no", False),
        ("Y", True),
        ("n", False),
    ],
)
def test_favorite_accepts_boolean_words(tmp_path: Path, cell: str, value: bool) -> None:
    """favorite is true/false, 1/0, yes/no or y/n in any case."""
    row = one(write(tmp_path, "m.csv", f"url,type,favorite\n{PNG},image,{cell}\n"))
    assert row.request is not None and row.request.favorite is value


@pytest.mark.parametrize("cell", ["maybe", "2", "ja"])
def test_other_favorite_words_are_invalid(tmp_path: Path, cell: str) -> None:
    """Any other favorite value is an invalid row naming the field, the value and the accepted words."""
    row = one(write(tmp_path, "m.csv", f"url,type,favorite\n{PNG},image,{cell}\n"))
    assert row.error == RowError("favorite", f"Input should be true/false, 1/0, yes/no or y/n (got {cell!r})")
    assert row.raw == {"url": PNG, "type": "image", "favorite": cell}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no header row"),
        ("\n  \n", "no header row"),
        ("type,prompt\nimage,x\n", "no 'url' column"),
        (f"{PNG},image\n", "no 'url' column"),
        ("url,type,url\n", "duplicate column names"),
        ('"url\n', "header row cannot be read"),
    ],
)
def test_unusable_csv_headers_are_manifest_errors(tmp_path: Path, text: str, message: str) -> None:
    """An empty file, a header without url, duplicate or unreadable columns stop the manifest before any row."""
    source = write(tmp_path, "m.csv", text.encode("latin-1"))
    with pytest.raises(ManifestError, match=message):
        preflight(source)
    with pytest.raises(ManifestError, match=message) as info:
        read(source)
    assert "m.csv" in str(info.value)


def test_preflight_accepts_a_good_csv_and_any_jsonl(tmp_path: Path) -> None:
    """preflight passes a CSV with a url column and a JSONL whose rows are not even checked."""
    preflight(write(tmp_path, "m.csv", f"url,type\n{PNG},picture\n"))
    preflight(write(tmp_path, "m.jsonl", "not json\n"))
    preflight(write(tmp_path, "empty.jsonl", ""))


def test_an_unclosed_quote_does_not_hide_the_rows_after_it(tmp_path: Path) -> None:
    """A stray opening quote makes its own row invalid; the rows after it are still read."""
    text = f'url,type,prompt\n{PNG},image,"oops\n{MP4},video,fine\n{PNG},image,"ok, quoted"\n{MP4},video,last\n'
    rows = read(write(tmp_path, "m.csv", text))
    assert [(r.line, r.error is None) for r in rows] == [(2, False), (3, True), (4, True), (5, True)]
    assert rows[0].error is not None and "quoted field left open" in rows[0].error.message


def test_an_unclosed_quote_at_the_end_does_not_hide_the_last_rows(tmp_path: Path) -> None:
    """A quote left open until end of file costs only the row that opened it."""
    text = f'url,type,prompt\n{PNG},image,"oops\n{MP4},video,fine\n{MP4},video,last\n'
    rows = read(write(tmp_path, "m.csv", text))
    assert [(r.line, r.error is None) for r in rows] == [(2, False), (3, True), (4, True)]


# --- line-level problems, both formats ----------------------------------------------------------------


def _three_lines(format_: str, middle: bytes) -> bytes:
    if format_ == "csv":
        return b"url,type\n" + f"{PNG},image\n".encode() + middle + b"\n" + f"{MP4},video\n".encode()
    return jsonl({"url": PNG}).encode() + middle + b"\n" + jsonl({"url": MP4}).encode()


@pytest.mark.parametrize("format_", ["csv", "jsonl"])
def test_an_invalid_utf8_line_is_one_invalid_row_between_good_ones(tmp_path: Path, format_: str) -> None:
    """A line that is not UTF-8 is reported with its byte offset; the lines around it are still rows."""
    middle = b"https://x.example/\xff.png,image" if format_ == "csv" else b'{"url": "https://x.example/\xff.png"}'
    rows = read(write(tmp_path, f"m.{format_}", _three_lines(format_, middle)), UTF8)
    first = 2 if format_ == "csv" else 1
    assert [r.line for r in rows] == [first, first + 1, first + 2]
    assert rows[0].request and rows[2].request
    offset = middle.index(b"\xff")
    assert rows[1].error == RowError(None, f"line is not valid UTF-8 (byte offset {offset})")


@pytest.mark.parametrize("format_", ["csv", "jsonl"])
def test_a_nul_byte_is_one_invalid_row(tmp_path: Path, format_: str) -> None:
    """A NUL byte makes its row invalid without breaking the parser."""
    middle = f"{PNG},im\0age".encode() if format_ == "csv" else b'{"url": "a\0b"}'
    rows = read(write(tmp_path, f"m.{format_}", _three_lines(format_, middle)))
    assert [r.error is None for r in rows] == [True, False, True]
    assert rows[1].error is not None and rows[1].error.message.startswith("line contains a NUL byte")


def test_a_bad_line_inside_a_quoted_field_invalidates_that_row_only(tmp_path: Path) -> None:
    """A non-UTF-8 line inside a multi-line quoted field spoils that row, and the next row still parses."""
    text = b"url,type,prompt\n" + PNG.encode() + b',image,"one\nt\xffwo\nthree"\n' + MP4.encode() + b",video,x\n"
    rows = read(write(tmp_path, "m.csv", text), UTF8)
    assert errors(rows) == [(2, None, "line is not valid UTF-8 (byte offset 1) (on line 3, inside this row)"), None]
    assert rows[1].line == 5


@pytest.mark.parametrize("format_", ["csv", "jsonl"])
def test_an_over_long_line_is_one_invalid_row_and_reading_continues(tmp_path: Path, format_: str) -> None:
    """A line longer than max_line_bytes is invalid; the next line is read normally."""
    long_url = "https://x.example/" + "a" * 200 + ".png"
    middle = f"{long_url},image" if format_ == "csv" else orjson.dumps({"url": long_url}).decode()
    options = ManifestOptions(max_line_bytes=100)
    rows = read(write(tmp_path, f"m.{format_}", _three_lines(format_, middle.encode())), options)
    assert [r.error is None for r in rows] == [True, False, True]
    assert rows[1].error == RowError(None, "line is longer than 100 bytes")


def test_max_line_bytes_does_not_count_the_line_ending(tmp_path: Path) -> None:
    """A line of exactly max_line_bytes is accepted with either LF or CRLF endings."""
    line = orjson.dumps({"url": PNG})
    source = write(tmp_path, "m.jsonl", line + b"\n" + line + b"\r\n" + line)
    assert [r.error for r in read(source, ManifestOptions(max_line_bytes=len(line)))] == [None, None, None]
    assert all(r.error for r in read(source, ManifestOptions(max_line_bytes=len(line) - 1)))


@pytest.mark.parametrize("format_", ["csv", "jsonl"])
def test_a_20_mb_line_is_skipped_in_bounded_memory(tmp_path: Path, format_: str) -> None:
    """A 20 MB line is never held whole: peak traced memory stays under 4 MB and the rows around it come out."""
    path = tmp_path / f"huge.{format_}"
    with path.open("wb") as out:
        head, tail = (b"url,type\n" + f"{PNG},image\n".encode(), f"{MP4},video\n".encode())
        if format_ == "jsonl":
            head, tail = jsonl({"url": PNG}).encode(), jsonl({"url": MP4}).encode()
        out.write(head)
        out.write(b'{"url": "' if format_ == "jsonl" else b"https://x.example/")
        for _ in range(20):
            out.write(b"x" * (1 << 20))
        out.write(b'"}\n' if format_ == "jsonl" else b",image\n")
        out.write(tail)
    source = ManifestSource.open(str(path))
    tracemalloc.start()
    try:
        rows = read(source)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [r.error.message if r.error else None for r in rows] == [None, "line is longer than 1048576 bytes", None]
    assert peak < 4 << 20, f"peak {peak} bytes"


# --- columns, defaults, inference ---------------------------------------------------------------------


def test_unknown_csv_columns_warn_once_per_manifest(tmp_path: Path) -> None:
    """Unknown columns are ignored with a single warning naming them."""
    spy = WarnSpy()
    rows = read(write(tmp_path, "m.csv", f"url,notes,type,extra\n{PNG},n,image,e\n{MP4},n,video,e\n"), warn=spy)
    assert all(r.request for r in rows)
    assert spy.calls == [
        (
            "manifest.unknown_columns",
            {"manifest": str(tmp_path / "m.csv"), "line": 1, "columns": ["notes", "extra"], "count": 2},
        )
    ]


def test_unknown_jsonl_keys_warn_once_per_manifest(tmp_path: Path) -> None:
    """Unknown keys are ignored with one warning, however many rows have them."""
    spy = WarnSpy()
    rows = read(write(tmp_path, "m.jsonl", jsonl({"url": PNG, "x": 1}, {"url": MP4, "y": 2})), warn=spy)
    assert [r.error for r in rows] == [None, None]
    assert [(event, fields["columns"], fields["line"]) for event, fields in spy.calls] == [
        ("manifest.unknown_columns", ["x"], 1)
    ]


def test_the_default_warning_goes_to_structlog(tmp_path: Path) -> None:
    """Without a warn callback, the unknown-columns warning is a structlog warning event."""
    source = write(tmp_path, "m.csv", f"url,extra\n{PNG},e\n")
    with capture_logs() as logs:
        list(read_manifest(source))
    assert [(log["event"], log["log_level"], log.get("columns")) for log in logs] == [
        ("manifest.detected", "info", None),
        ("manifest.unknown_columns", "warning", ["extra"]),
    ]


def test_strict_columns_rejects_unknown_csv_columns_before_any_row(tmp_path: Path) -> None:
    """With strict_columns an unknown CSV column is a ManifestError from preflight and from the reader."""
    source = write(tmp_path, "m.csv", f"url,type,extra\n{PNG},image,e\n")
    options = ManifestOptions(strict_columns=True)
    with pytest.raises(ManifestError, match="unknown columns 'extra'"):
        preflight(source, options)
    with pytest.raises(ManifestError, match="unknown columns 'extra'"):
        read(source, options)


def test_strict_columns_makes_a_jsonl_row_with_unknown_keys_invalid(tmp_path: Path) -> None:
    """With strict_columns a JSONL row with an unknown key is invalid, naming the key; other rows are fine."""
    spy = WarnSpy()
    source = write(tmp_path, "m.jsonl", jsonl({"url": PNG, "colour": "red"}, {"url": MP4}))
    rows = read(source, ManifestOptions(strict_columns=True), spy)
    assert errors(rows) == [(1, "colour", "unknown field"), None]
    assert rows[0].raw == {"url": PNG, "colour": "red"} and spy.calls == []


def test_column_mapping_renames_csv_columns_and_jsonl_keys(tmp_path: Path) -> None:
    """``columns`` reads a field from another column or key; the field's own name is then an unknown column."""
    options = ManifestOptions(columns={"url": "media_url", "prompt": "caption"})
    spy = WarnSpy()
    csv_rows = read(write(tmp_path, "m.csv", f"media_url,caption,url\n{PNG},hello,ignored\n"), options, spy)
    jsonl_rows = read(write(tmp_path, "m.jsonl", jsonl({"media_url": PNG, "caption": "hello"})), options)
    expected = UploadRequest(url=PNG, type="image", prompt="hello")
    assert [r.request for r in csv_rows + jsonl_rows] == [expected, expected]
    assert spy.calls[0][1]["columns"] == ["url"]


def test_a_mapped_url_column_must_exist(tmp_path: Path) -> None:
    """When url is mapped, the header must have the mapped column, and the error names it."""
    source = write(tmp_path, "m.csv", f"url,type\n{PNG},image\n")
    with pytest.raises(ManifestError, match="no 'media_url' column"):
        preflight(source, ManifestOptions(columns={"url": "media_url"}))


def test_defaults_fill_absent_and_empty_fields_only(tmp_path: Path) -> None:
    """Defaults apply to absent fields (and empty CSV cells); values in the row win."""
    options = ManifestOptions(defaults={"collection_id": "c1", "favorite": True, "tag_ids": "t1;t2"})
    csv_rows = read(
        write(tmp_path, "m.csv", f"url,type,collection_id,favorite\n{PNG},image,,\n{MP4},,c2,no\n"), options
    )
    jsonl_rows = read(
        write(tmp_path, "m.jsonl", jsonl({"url": PNG}, {"url": MP4, "collection_id": "c2", "favorite": False})), options
    )
    expected = [
        UploadRequest(url=PNG, type="image", collection_id="c1", favorite=True, tag_ids=["t1", "t2"]),
        UploadRequest(url=MP4, type="video", collection_id="c2", favorite=False, tag_ids=["t1", "t2"]),
    ]
    assert [r.request for r in csv_rows] == expected
    assert [r.request for r in jsonl_rows] == expected


def test_a_default_type_comes_before_inference(tmp_path: Path) -> None:
    """A default type is used instead of inferring one from the URL."""
    row = one(write(tmp_path, "m.jsonl", jsonl({"url": PNG})), ManifestOptions(defaults={"type": "3d"}))
    assert row.request is not None and row.request.type == "3d"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"columns": {"uri": "x"}}, "unknown field"),
        ({"columns": {"url": "prompt"}}, "both read column 'prompt'"),
        ({"defaults": {"url": PNG}}, "cannot have a default"),
        ({"defaults": {"idempotency_key": "k"}}, "cannot have a default"),
        ({"defaults": {"type": "picture"}}, "'type'"),
        ({"defaults": {"favorite": "sometimes"}}, "'favorite'"),
        ({"defaults": {"prompt": ""}}, "at least 1 character"),
        ({"max_line_bytes": 0}, "max_line_bytes"),
    ],
)
def test_bad_options_are_config_errors(options: dict[str, Any], message: str) -> None:
    """Unknown or conflicting column mappings and invalid defaults are refused when the options are built."""
    with pytest.raises(ConfigError, match=message):
        ManifestOptions(**options)


@pytest.mark.parametrize(
    ("url", "asset_type"),
    [
        ("https://h.example/a/b.PNG", "image"),
        ("https://h.example/a.jpeg?w=100#frag", "image"),
        ("https://h.example/clip.webm", "video"),
        ("http://h.example/x/song.flac", "audio"),
        ("https://h.example/model.glb", "3d"),
        ("https://h.example/scan.usdz", "3d"),
    ],
)
def test_type_is_inferred_from_the_url_extension(tmp_path: Path, url: str, asset_type: str) -> None:
    """A missing type is inferred from the URL path's extension, ignoring case, query and fragment."""
    row = one(write(tmp_path, "m.csv", f"url,type\n{url},\n"))
    assert row.request is not None and row.request.type == asset_type


@pytest.mark.parametrize("url", ["https://h.example/file.txt", "https://h.example/noext", "https://h.png"])
def test_a_type_that_cannot_be_inferred_makes_the_row_invalid(tmp_path: Path, url: str) -> None:
    """Without a type and without a known extension in the URL path, the row is invalid on field type."""
    row = one(write(tmp_path, "m.jsonl", jsonl({"url": url})))
    assert row.error is not None and row.error.field == "type"
    assert "missing" in row.error.message and "could not be inferred from the URL extension" in row.error.message


def test_an_empty_jsonl_type_counts_as_absent(tmp_path: Path) -> None:
    """``"type": ""`` gets the default type, else the inferred one, like an absent type."""
    source = write(tmp_path, "m.jsonl", jsonl({"url": PNG, "type": ""}))
    assert one(source).request == UploadRequest(url=PNG, type="image")
    assert one(source, ManifestOptions(defaults={"type": "3d"})).request == UploadRequest(url=PNG, type="3d")


def test_inference_can_be_turned_off(tmp_path: Path) -> None:
    """With infer_type=False a missing type is simply a required field."""
    row = one(write(tmp_path, "m.jsonl", jsonl({"url": PNG})), ManifestOptions(infer_type=False))
    assert row.error == RowError("type", "Field required")


# --- JSONL values -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ('{"url": 5, "type": "image"}', RowError("url", "Input should be a valid string (got 5)")),
        (f'{{"url": "{PNG}", "type": "picture"}}', RowError("type", f"{TYPES_EXPECTED} (got 'picture')")),
        (f'{{"url": "{PNG}", "type": null}}', RowError("type", TYPES_EXPECTED)),
        (
            f'{{"url": "{PNG}", "favorite": "true"}}',
            RowError("favorite", "Input should be a valid boolean (got 'true')"),
        ),
        (f'{{"url": "{PNG}", "favorite": 1}}', RowError("favorite", "Input should be a valid boolean (got 1)")),
        (f'{{"url": "{PNG}", "tag_ids": "a;b"}}', RowError("tag_ids", "Input should be a valid list (got 'a;b')")),
        (
            f'{{"url": "{PNG}", "tag_ids": ["a", 2]}}',
            RowError("tag_ids", "Input should be a valid string (got 2) (at tag_ids[1])"),
        ),
        (f'{{"url": "{PNG}", "prompt": 3}}', RowError("prompt", "Input should be a valid string (got 3)")),
        (
            f'{{"url": "{PNG}", "collection_id": 7}}',
            RowError("collection_id", "Input should be a valid string (got 7)"),
        ),
        (
            '{"type": "image"}',
            RowError("url", NO_URL.format(shapes="images[*].url, image.url, masks[*].url, video.url, …")),
        ),
        ("[1, 2]", RowError(None, "expected a JSON object, got an array")),
        ('"https://x"', RowError(None, "expected a JSON object, got a string")),
        ("42", RowError(None, "expected a JSON object, got a number")),
        ("null", RowError(None, "expected a JSON object, got null")),
    ],
)
def test_jsonl_values_are_validated_strictly(tmp_path: Path, line: str, error: RowError) -> None:
    """JSON values keep their types: wrong types, non-objects and missing fields are precise invalid rows."""
    assert one(write(tmp_path, "m.jsonl", line + "\n")).error == error


def test_null_prompt_and_collection_id_are_allowed(tmp_path: Path) -> None:
    """prompt and collection_id are nullable in the spec, so null is valid (and equal to absent)."""
    row = one(write(tmp_path, "m.jsonl", jsonl({"url": PNG, "prompt": None, "collection_id": None})))
    assert row.request == UploadRequest(url=PNG, type="image")


@pytest.mark.parametrize("line", ['{"url": ', "{'url': 'x'}", '{"url": "a"} trailing', '{"a":1,}'])
def test_malformed_json_is_an_invalid_row(tmp_path: Path, line: str) -> None:
    """A line that is not JSON is invalid with field None and the parser's reason."""
    row = one(write(tmp_path, "m.jsonl", line + "\n"))
    assert row.error is not None and row.error.field is None
    assert row.error.message.startswith("malformed JSON: ") and row.raw is None


def test_deeply_nested_json_is_malformed_not_a_crash(tmp_path: Path) -> None:
    """JSON nested beyond the parser's depth limit is one malformed row; the next line is still read."""
    source = write(tmp_path, "m.jsonl", "[" * 5000 + "]" * 5000 + "\n" + jsonl({"url": PNG}))
    rows = read(source)
    assert rows[0].error is not None and rows[0].error.message.startswith("malformed JSON")
    assert rows[1].request is not None


def test_a_deep_but_parseable_value_is_kept_in_a_serialisable_raw(tmp_path: Path) -> None:
    """A value nested deeper than orjson writes still leaves a raw row that can go into the results file."""
    deep = "[" * 500 + "]" * 500
    row = one(write(tmp_path, "m.jsonl", f'{{"url": "{PNG}", "tag_ids": {deep}}}\n'))
    assert row.error is not None and row.error.field == "tag_ids"
    assert row.raw is not None
    orjson.dumps(row.raw)


@pytest.mark.parametrize("url", ["javascript:alert(1)", "file:///etc/passwd", "ftp://h.example/a.png", "/a.png"])
@pytest.mark.parametrize("format_", ["csv", "jsonl"])
def test_non_http_urls_are_invalid(tmp_path: Path, url: str, format_: str) -> None:
    """Only absolute http(s) URLs are accepted; the message comes from the URL check itself."""
    text = f"url,type\n{url},image\n" if format_ == "csv" else jsonl({"url": url, "type": "image"})
    row = one(write(tmp_path, f"m.{format_}", text))
    assert row.error is not None and row.error.field == "url"
    assert row.error.message.startswith("URL must be absolute with an http or https scheme")


@pytest.mark.parametrize(
    ("prompt", "error"),
    [
        ("", RowError("prompt", "String should have at least 1 character (got '')")),
        ("p" * 2000, None),
        ("p" * 2001, RowError("prompt", "String should have at most 2000 characters")),
    ],
)
def test_prompt_length_bounds(tmp_path: Path, prompt: str, error: RowError | None) -> None:
    """A prompt has 1 to 2000 characters."""
    assert one(write(tmp_path, "m.jsonl", jsonl({"url": PNG, "prompt": prompt}))).error == error


def test_huge_raw_values_are_truncated(tmp_path: Path) -> None:
    """An invalid row keeps its raw values cut to about 1000 characters."""
    row = one(write(tmp_path, "m.csv", f"url,type,prompt\n{PNG},image,{'p' * 50_000}\n"))
    assert row.error is not None and row.error.field == "prompt"
    assert row.raw is not None and isinstance(row.raw["prompt"], str) and 1000 <= len(row.raw["prompt"]) <= 1001


# --- idempotency keys, describe -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected", "field"),
    [
        ("order-17/a.png", "order-17/a.png", None),
        ("k" * 255, "k" * 255, None),
        ("", None, None),
        (None, None, None),
        ("has space", None, "idempotency_key"),
        ("k" * 256, None, "idempotency_key"),
        ("clé", None, "idempotency_key"),
        (17, None, "idempotency_key"),
    ],
)
def test_explicit_idempotency_keys_are_validated(
    tmp_path: Path, key: object, expected: str | None, field: str | None
) -> None:
    """An explicit key must be 1..255 printable ASCII characters without spaces; empty or null means none."""
    row = one(write(tmp_path, "m.jsonl", jsonl({"url": PNG, "idempotency_key": key})))
    assert row.idempotency_key == expected
    assert (row.error.field if row.error else None) == field
    assert (row.request is None) == (field is not None)


def test_csv_idempotency_key_column(tmp_path: Path) -> None:
    """The idempotency_key column is read verbatim and kept out of the request body."""
    row = one(write(tmp_path, "m.csv", f"{HEADER}\n{PNG},image,,,,,item-1\n"))
    assert row.idempotency_key == "item-1" and row.request == UploadRequest(url=PNG, type="image")


def test_describe_names_file_line_and_field(tmp_path: Path) -> None:
    """describe() reads ``file:line: field 'x': message``, or ``file:line: message`` for a line problem."""
    source = write(tmp_path, "media.jsonl", jsonl({"url": PNG, "prompt": "p" * 2001}) + "{bad\n" + jsonl({"url": PNG}))
    described = [r.describe() for r in read(source)]
    name = str(tmp_path / "media.jsonl")
    assert described[0] == f"{name}:1: field 'prompt': String should have at most 2000 characters"
    assert described[1].startswith(f"{name}:2: malformed JSON: ")
    assert described[2] == f"{name}:3: valid"


# --- count_rows ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "count"),
    [
        ("m.csv", f"url\n{PNG}\n{PNG}\n", 2),
        ("m.csv", f"url\n{PNG}\n{PNG}", 2),
        ("m.csv", "url\n", 0),
        ("m.csv", "", 0),
        ("m.jsonl", jsonl({"url": PNG}) * 3, 3),
        ("m.jsonl.gz", jsonl({"url": PNG}) * 5, 5),
        ("m.csv", f'url,prompt\n{PNG},"two\nlines"\n', 2),  # an estimate: newlines inside quotes count
    ],
)
def test_count_rows_counts_physical_lines(tmp_path: Path, name: str, text: str, count: int) -> None:
    """count_rows counts lines (less the CSV header) without parsing; quoted newlines make it an overestimate."""
    assert count_rows(write(tmp_path, name, text)) == count


# --- properties ---------------------------------------------------------------------------------------

_TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from(list(",\"\n\r; []\t'")),
        st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    ),
    min_size=1,
    max_size=60,
)
_URLS = st.builds(
    lambda host, path, ext, query: f"https://{host}.example/{path}.{ext}{query}",
    st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True),
    st.from_regex(r"(?:[A-Za-z0-9_,;~-]|%[0-9A-F]{2}){1,30}", fullmatch=True),
    st.sampled_from(sorted(TYPE_BY_EXTENSION)),
    st.sampled_from(["", "?a=1&b=2", "#f"]),
)
_KEYS = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)
_TRUE_WORDS = ["true", "TRUE", "1", "yes", "Yes"]
_FALSE_WORDS = ["false", "False", "0", "no", "NO"]


@st.composite
def _rows(draw: st.DrawFn) -> dict[str, Any]:
    row: dict[str, Any] = {"url": draw(_URLS)}
    optional = {
        "type": st.sampled_from(ASSET_TYPES),
        "prompt": _TEXT,
        "collection_id": _TEXT,
        "favorite": st.booleans(),
        "tag_ids": st.lists(_TEXT, max_size=4),
        "idempotency_key": _KEYS,
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            row[name] = draw(strategy)
    return row


def _csv_cell(draw: Any, name: str, value: Any) -> str:
    if name == "favorite":
        return str(draw(st.sampled_from(_TRUE_WORDS if value else _FALSE_WORDS)))
    if name != "tag_ids":
        return str(value)
    plain = ";".join(value)
    representable = all(
        t == t.strip() and ";" not in t and "," not in t for t in value
    ) and not plain.lstrip().startswith("[")
    if value and representable and draw(st.booleans()):
        return plain
    return orjson.dumps(value).decode()


def _as_csv(draw: Any, rows: list[dict[str, Any]]) -> tuple[str, list[int]]:
    out = io.StringIO()
    writer = csv.writer(out)  # CRLF endings: the csv module then quotes any field holding \r or \n
    writer.writerow(KNOWN_FIELDS)
    starts = []
    for row in rows:
        starts.append(out.getvalue().count("\n") + 1)
        writer.writerow([_csv_cell(draw, f, row[f]) if f in row else "" for f in KNOWN_FIELDS])
    return out.getvalue(), starts


def _requests(rows: list[ManifestRow]) -> list[tuple[UploadRequest | None, str | None, RowError | None]]:
    return [(r.request, r.idempotency_key, r.error) for r in rows]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), rows=st.lists(_rows(), max_size=8))
def test_csv_and_jsonl_give_the_same_requests(tmp_path: Path, data: st.DataObject, rows: list[dict[str, Any]]) -> None:
    """Any valid rows written as CSV and as JSONL read back as the same requests, with correct CSV line numbers."""
    csv_text, starts = _as_csv(data.draw, rows)
    csv_rows = read(write(tmp_path, "p.csv", csv_text))
    jsonl_rows = read(write(tmp_path, "p.jsonl", jsonl(*rows)))
    assert _requests(csv_rows) == _requests(jsonl_rows)
    assert all(r.error is None for r in csv_rows)
    assert [r.line for r in csv_rows] == starts
    assert [r.line for r in jsonl_rows] == list(range(1, len(rows) + 1))


_TOKENS = st.sampled_from(
    [b"url", b"type", b"prompt", b",", b'"', b"\n", b"\r", b"\r\n", b" ", b"\t", b"\x00", b"\xff", b"\xc3",
     b"\xef\xbb\xbf", b"\x1f\x8b", b"{", b"}", b"[", b"]", b":", b'"url"', b'"type"', b"null", b"5", b";",
     PNG.encode(), b"javascript:x", b"image", b"yes", b"\\u0000", b"\\", b",image,x\n",
     f"{MP4},video,\n".encode(), f'{{"url": "{PNG}"}}\n'.encode()]
)  # fmt: skip
_FUZZ = st.one_of(st.binary(max_size=300), st.lists(_TOKENS, max_size=60).map(b"".join))


def _expected_jsonl_lines(data: bytes, max_line_bytes: int) -> list[int]:
    """The line numbers that must each give one row: every over-long or non-blank physical line."""
    numbers = []
    if b"\n" not in data:  # a file whose lines end in a lone CR (old Mac) is read as such
        data = data.replace(b"\r", b"\n")
    for number, line in enumerate(data.split(b"\n")[: None if not data.endswith(b"\n") else -1], start=1):
        content = line[:-1] if line.endswith(b"\r") else line
        visible = line[3:] if number == 1 and line.startswith(b"\xef\xbb\xbf") else line
        if len(content) > max_line_bytes or visible.strip():
            numbers.append(number)
    return numbers


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_FUZZ, header=st.sampled_from([b"", b"url,type,prompt\n"]), limit=st.sampled_from([16, 64, 1 << 20]))
def test_random_bytes_never_crash_the_readers(tmp_path: Path, data: bytes, header: bytes, limit: int) -> None:
    """Any bytes give rows or a ManifestError; read as UTF-8, each non-blank JSONL line is exactly one row, in order."""
    options = ManifestOptions(max_line_bytes=limit)
    for name in ("f.csv", "f.jsonl"):
        path = tmp_path / name
        content = header + data if name == "f.csv" else data
        path.write_bytes(content)
        try:
            source = ManifestSource.open(str(path))
            rows = read(source, options)
        except ManifestError:
            continue
        lines = [r.line for r in rows]
        assert lines == sorted(lines)
        assert all((r.request is None) == (r.error is not None) for r in rows)
        for row in rows:
            orjson.dumps(row.raw)
        if name == "f.jsonl" and not source.gzip:  # (another encoding guessed would make other lines of the bytes)
            utf8_lines = [r.line for r in read(source, ManifestOptions(max_line_bytes=limit, encoding="utf-8"))]
            assert utf8_lines == _expected_jsonl_lines(content, limit)


def test_options_keep_their_own_typed_copies() -> None:
    """Options copy the mappings they are given (typing CSV-style defaults), so later changes do not leak in."""
    columns = {"url": "media_url"}
    defaults: dict[str, object] = {"favorite": "yes", "tag_ids": "a;b"}
    options = ManifestOptions(columns=columns, defaults=defaults)
    columns["url"] = "other"
    defaults["favorite"] = "no"
    assert options.columns == {"url": "media_url"}
    assert options.defaults == {"favorite": True, "tag_ids": ["a", "b"]}
    assert pickle.loads(pickle.dumps(options)) == options


def test_a_csv_field_over_the_csv_module_limit_is_one_invalid_row(tmp_path: Path) -> None:
    """A cell longer than csv.field_size_limit() (128 KiB) is an invalid row, not an error for the file."""
    rows = read(write(tmp_path, "m.csv", f"url,type,prompt\n{PNG},image,{'p' * 200_000}\n{MP4},video,ok\n"))
    assert rows[0].error is not None and "field larger than field limit" in rows[0].error.message
    assert (rows[1].line, rows[1].error) == (3, None)


def test_header_names_are_stripped(tmp_path: Path) -> None:
    """Whitespace around column names in the header is ignored."""
    row = one(write(tmp_path, "m.csv", f" url , type \n{PNG},image\n"))
    assert row.request == UploadRequest(url=PNG, type="image")


def test_jsonl_with_bom_and_crlf(tmp_path: Path) -> None:
    """A JSONL file may start with a UTF-8 BOM and use CRLF line endings."""
    source = write(
        tmp_path, "m.jsonl", b"\xef\xbb\xbf" + orjson.dumps({"url": PNG}) + b"\r\n\r\n" + orjson.dumps({"url": MP4})
    )
    assert [(r.line, r.error) for r in read(source)] == [(1, None), (3, None)]


def test_csv_lines_of_only_empty_cells_are_skipped(tmp_path: Path) -> None:
    """Lines of only commas (what spreadsheets export below the data) are skipped like blank lines, not invalid."""
    rows = read(write(tmp_path, "m.csv", f"{HEADER}\n{PNG},image,,,,,\n,,,,,,\n  , ,\n{PNG}?2,image,,,,,\n"))
    assert [row.line for row in rows] == [2, 5]
    assert all(row.request is not None for row in rows)
