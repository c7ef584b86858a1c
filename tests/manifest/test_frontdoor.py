"""The front door end to end: manifests written the way Excel, Google Sheets and fal's models write them, each run
with ``ingest run`` against the embedded fake server, the created assets checked field by field from its ledger."""

from __future__ import annotations

import codecs
import gzip
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ingest.fakeserver import FakeServer
from tests.helpers import KEY
from tests.helpers.cli import clean_env, run_cli
from tests.helpers.records import read_results

pytestmark = pytest.mark.anyio

FAL = "https://v3b.fal.media/files/b/frontdoor"


async def ingest(server: FakeServer, manifest: Path, *flags: str) -> tuple[int, list[dict[str, Any]], str]:
    """``ingest run`` over ``manifest``, one request at a time: (exit code, the assets created in order, stderr)."""
    results = manifest.with_name(manifest.name + ".results.jsonl")
    done = await run_cli(
        "run", str(manifest), "--base-url", server.url, "--results", str(results), "--rate", "1000",
        "--concurrency", "1", "--log-format", "json", *flags,
    )  # fmt: skip
    assets = [entry["asset"] for entry in server.ledger.assets]
    return done.returncode, assets, done.stderr


def fields(asset: dict[str, Any]) -> tuple[Any, ...]:
    """What a manifest row decides of an asset: url, type, prompt, favorite, collections, tag ids."""
    tags = [tag["id"] for tag in asset["tags"]]
    return asset["url"], asset["type"], asset["prompt"], asset["is_favorited"], asset["collection_ids"], tags


async def test_excel_csv_in_cp1252_keeps_its_accents(tmp_path: Path, fake_server: FakeServer) -> None:
    """An Excel "CSV" (cp1252, CRLF) is detected as such, with one warning, and its accents arrive intact."""
    text = f"url,type,prompt\r\n{FAL}/1.png,image,Café crème – été\r\n{FAL}/2.mp4,video,Noël à Zürich\r\n"
    manifest = tmp_path / "excel.csv"
    manifest.write_bytes(text.encode("cp1252"))
    code, assets, stderr = await ingest(fake_server, manifest)
    assert code == 0, stderr
    assert [fields(a) for a in assets] == [
        (f"{FAL}/1.png", "image", "Café crème – été", False, [], []),
        (f"{FAL}/2.mp4", "video", "Noël à Zürich", False, [], []),
    ]
    assert stderr.count('"manifest.encoding_detected"') == 1


async def test_european_excel_csv_with_semicolons(tmp_path: Path, fake_server: FakeServer) -> None:
    """A European Excel CSV (';', cp1252) has its delimiter sniffed; Image / Y / a;b cells are read as meant."""
    text = (
        f"URL;Type;Prompt;Favorite;Tag_IDs\r\n{FAL}/eu1.png;Image;Schöne Grüße;Y;a;b\r\n".replace(";a;b", ';"a;b"')
        + f"{FAL}/eu2.png; IMAGE ;Ça va;N;\r\n"
    )
    manifest = tmp_path / "europe.csv"
    manifest.write_bytes(text.encode("cp1252"))
    code, assets, stderr = await ingest(fake_server, manifest)
    assert code == 0, stderr
    assert [fields(a) for a in assets] == [
        (f"{FAL}/eu1.png", "image", "Schöne Grüße", True, [], ["a", "b"]),
        (f"{FAL}/eu2.png", "image", "Ça va", False, [], []),
    ]


async def test_excel_unicode_text_is_utf16_with_tabs(tmp_path: Path, fake_server: FakeServer) -> None:
    """Excel's "Unicode Text" (.txt, UTF-16 LE with BOM, tabs, CRLF) reads as a delimited manifest."""
    text = f"url\ttype\tprompt\r\n{FAL}/u1.png\timage\t東京の夜\r\n{FAL}/u2.glb\t3d\t三次元モデル\r\n"
    manifest = tmp_path / "unicode.txt"
    manifest.write_bytes(codecs.BOM_UTF16_LE + text.encode("utf-16-le"))
    code, assets, stderr = await ingest(fake_server, manifest)
    assert code == 0, stderr
    assert [fields(a) for a in assets] == [
        (f"{FAL}/u1.png", "image", "東京の夜", False, [], []),
        (f"{FAL}/u2.glb", "3d", "三次元モデル", False, [], []),
    ]


async def test_google_sheets_export(tmp_path: Path, fake_server: FakeServer) -> None:
    """A Sheets export: capitalised headers, extra columns, cells with spaces, MIME types, comma-separated tags."""
    text = (
        "URL, Type ,Prompt,Collection_ID,Tag IDs,Notes\r\n"
        f"  {FAL}/s1.png ,Image,a red fox,col-1,,checked\r\n"
        f'{FAL}/s2,image/webp,,,"t1, t2",\r\n'
        f"{FAL}/s3.bin,model/gltf-binary,a chair,,,\r\n"
        ",,,,,\r\n"
    )
    manifest = tmp_path / "sheet.csv"
    manifest.write_text(text, encoding="utf-8", newline="")
    code, assets, stderr = await ingest(fake_server, manifest, "--column", "tag_ids=Tag IDs")
    assert code == 0, stderr
    assert [fields(a) for a in assets] == [
        (f"{FAL}/s1.png", "image", "a red fox", False, ["col-1"], []),
        (f"{FAL}/s2", "image", None, False, [], ["t1", "t2"]),
        (f"{FAL}/s3.bin", "3d", "a chair", False, [], []),
    ]
    assert '"manifest.unknown_columns"' in stderr and '"Notes"' in stderr


def _fal_outputs() -> list[dict[str, Any]]:
    image = {"url": f"{FAL}/fal-a.png", "content_type": "image/png", "width": 1024, "height": 768}
    return [
        {"images": [image, {**image, "url": f"{FAL}/fal-b.jpeg", "content_type": "image/jpeg"}], "seed": 7,
         "prompt": "two cats", "has_nsfw_concepts": [False, False]},
        {"video": {"url": f"{FAL}/fal-c.mp4", "content_type": "video/mp4", "file_size": 10}, "prompt": "a wave"},
        {"model_mesh": {"url": f"{FAL}/fal-d.glb", "content_type": "application/octet-stream"}, "seed": 1},
        {"data": {"audio_file": {"url": f"{FAL}/fal-e.wav"}}, "requestId": "r-1"},
    ]  # fmt: skip


EXPECTED_FAL: list[tuple[Any, ...]] = [
    (f"{FAL}/fal-a.png", "image", "two cats", False, [], []),
    (f"{FAL}/fal-b.jpeg", "image", "two cats", False, [], []),
    (f"{FAL}/fal-c.mp4", "video", "a wave", False, [], []),
    (f"{FAL}/fal-d.glb", "3d", None, False, [], []),
    (f"{FAL}/fal-e.wav", "audio", None, False, [], []),
]


async def test_fal_model_outputs_become_one_item_per_file(tmp_path: Path, fake_server: FakeServer) -> None:
    """fal outputs saved as JSONL: one asset per image/video/mesh/audio, typed, with the record's prompt; a rerun
    sends nothing (the keys derive from the files' URLs), and each image's record carries its index."""
    manifest = tmp_path / "outputs.jsonl"
    manifest.write_text("".join(json.dumps(o) + "\n" for o in _fal_outputs()))
    code, assets, stderr = await ingest(fake_server, manifest)
    assert code == 0, stderr
    assert sorted(fields(a) for a in assets) == sorted(EXPECTED_FAL)  # sent concurrently: any order
    records = read_results(tmp_path / "outputs.jsonl.results.jsonl")
    assert sorted((r["line"], r.get("index", -1)) for r in records) == [(1, 0), (1, 1), (2, -1), (3, -1), (4, -1)]
    assert stderr.count('"manifest.fal_output"') == 4
    code, assets, _ = await ingest(fake_server, manifest)
    assert code == 0 and len(assets) == 5


async def test_a_json_array_and_a_wrapped_array(tmp_path: Path, fake_server: FakeServer) -> None:
    """A pretty-printed .json array and a {"data": [...]} object stream their records with physical lines."""
    array = tmp_path / "items.json"
    array.write_text(json.dumps([{"url": f"{FAL}/j1.png"}, f"{FAL}/j2.mp4", *_fal_outputs()[:1]], indent=2))
    code, assets, stderr = await ingest(fake_server, array)
    assert code == 0, stderr
    assert [a["url"] for a in assets] == [f"{FAL}/j1.png", f"{FAL}/j2.mp4", f"{FAL}/fal-a.png", f"{FAL}/fal-b.jpeg"]
    assert [r["line"] for r in read_results(tmp_path / "items.json.results.jsonl")] == [2, 5, 6, 6]
    wrapped = tmp_path / "wrapped.json.gz"
    wrapped.write_bytes(gzip.compress(json.dumps({"count": 1, "data": [{"url": f"{FAL}/j3.webm"}]}).encode()))
    code, assets, stderr = await ingest(fake_server, wrapped)
    assert code == 0, stderr
    assert fields(assets[-1]) == (f"{FAL}/j3.webm", "video", None, False, [], [])


async def test_a_plain_url_list(tmp_path: Path, fake_server: FakeServer) -> None:
    """A .txt of URLs (comments, blank lines, CR line ends) is a URL list; types come from the extensions."""
    manifest = tmp_path / "urls.txt"
    manifest.write_bytes(f"# exported\r\r{FAL}/l1.png\r{FAL}/l2.flac\r\r{FAL}/l3.obj\r".encode())
    code, assets, stderr = await ingest(fake_server, manifest)
    assert code == 0, stderr
    assert [(a["url"], a["type"]) for a in assets] == [
        (f"{FAL}/l1.png", "image"),
        (f"{FAL}/l2.flac", "audio"),
        (f"{FAL}/l3.obj", "3d"),
    ]
    assert [r["line"] for r in read_results(tmp_path / "urls.txt.results.jsonl")] == [3, 4, 6]


async def test_a_tsv_and_a_column_path(tmp_path: Path, fake_server: FakeServer) -> None:
    """A .tsv reads with tabs; ``--column url=outputs[*].file.url`` explodes a custom JSON shape."""
    tsv = tmp_path / "media.tsv"
    tsv.write_text(f"url\tprompt\n{FAL}/t1.png\twith, a comma\n")
    code, assets, stderr = await ingest(fake_server, tsv)
    assert code == 0, stderr
    assert fields(assets[0]) == (f"{FAL}/t1.png", "image", "with, a comma", False, [], [])
    custom = tmp_path / "custom.jsonl"
    record = {"outputs": [{"file": {"url": f"{FAL}/p1.png"}}, {"file": {"url": f"{FAL}/p2.png"}}], "caption": "c"}
    custom.write_text(json.dumps(record) + "\n")
    code, assets, stderr = await ingest(fake_server, custom, "--column", "url=outputs[*].file.url", "--column",
                                        "prompt=caption")  # fmt: skip
    assert code == 0, stderr
    assert [fields(a) for a in assets[1:]] == [
        (f"{FAL}/p1.png", "image", "c", False, [], []),
        (f"{FAL}/p2.png", "image", "c", False, [], []),
    ]


async def test_stdin_with_a_format(tmp_path: Path, fake_server: FakeServer) -> None:
    """``-`` reads any format given with ``--format``: here a JSON array piped in."""
    data = json.dumps([{"url": f"{FAL}/in1.png", "prompt": "piped"}]).encode()
    results = tmp_path / "stdin.results.jsonl"
    args = ["-m", "ingest", "run", "-", "--format", "json", "--base-url", fake_server.url, "--results", str(results)]
    import anyio

    done = await anyio.run_process(
        [__import__("sys").executable, *args], input=data, env=clean_env(FAL_KEY=KEY), check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    assert fields(fake_server.ledger.assets[0]["asset"]) == (f"{FAL}/in1.png", "image", "piped", False, [], [])


async def test_iris_are_sent_as_uris_and_non_uris_are_invalid(tmp_path: Path, fake_server: FakeServer) -> None:
    """``…/東京.png`` is sent percent-encoded; a URL with a space is an invalid row that suggests %20."""
    manifest = tmp_path / "iri.csv"
    manifest.write_text(f"url\n{FAL}/東京.png\n{FAL}/my file.png\n{FAL}/a%zz.png\n", encoding="utf-8")
    code, assets, _ = await ingest(fake_server, manifest)
    assert code == 1
    assert [a["url"] for a in assets] == [f"{FAL}/%E6%9D%B1%E4%BA%AC.png"]
    errors = [r["error"]["message"] for r in read_results(tmp_path / "iri.csv.results.jsonl") if r["error"]]
    assert "write it as %20" in errors[0] and "malformed escape '%zz'" in errors[1]


async def test_the_fake_server_answers_422_to_a_non_uri(fake_server: FakeServer) -> None:
    """The embedded fake, like a strict server, refuses a url that is not a URI."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{fake_server.url}/assets/uploads",
            json={"url": f"{FAL}/東京.png", "type": "image"},
            headers={"Authorization": f"Key {KEY}", "Idempotency-Key": "iri-1"},
        ) as response,
    ):
        assert response.status == 422
        assert "non-ASCII" in (await response.json())["error"]["message"]


async def test_validate_dry_run_and_run_give_one_verdict(tmp_path: Path, fake_server: FakeServer) -> None:
    """With --require-fal-host, validate, run --dry-run and run count the same rows valid and invalid."""
    manifest = tmp_path / "mixed.csv"
    manifest.write_text(f"url\n{FAL}/v1.png\nhttps://cdn.example.com/v2.png\n{FAL}/v3.png\nhttps://x.test/v4.png\n")
    validate = await run_cli("validate", str(manifest), "--require-fal-host")
    assert "4 rows: 2 valid, 2 invalid" in validate.stdout, validate.stdout
    assert "detected: manifest=" in validate.stdout and "delimiter=comma" in validate.stdout
    results = tmp_path / "mixed.results.jsonl"
    common = ["--base-url", fake_server.url, "--results", str(results), "--require-fal-host"]
    dry = await run_cli("run", str(manifest), "--dry-run", *common)
    assert "would send 2 items" in dry.stdout and "invalid: 2" in dry.stdout, dry.stdout
    done = await run_cli("run", str(manifest), *common)
    assert done.returncode == 1
    statuses = [r["status"] for r in read_results(results)]
    assert sorted(statuses) == ["invalid", "invalid", "succeeded", "succeeded"]
