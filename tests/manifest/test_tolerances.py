"""The front door's pure pieces, from tables: encodings, sniffing, cells, IRIs, JSON paths, fal output shapes."""

from __future__ import annotations

import codecs
import random
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.errors import ConfigError
from ingest.manifest.cells import normalize_type, parse_favorite, parse_tag_ids
from ingest.manifest.encoding import choose_encoding
from ingest.manifest.falshapes import output_items
from ingest.manifest.options import ManifestOptions
from ingest.manifest.paths import MISSING, parse_path
from ingest.manifest.sniff import format_from_content, line_ends, sniff_delimiter
from ingest.manifest.source import ManifestSource, read_manifest
from ingest.manifest.uri import iri_to_uri
from ingest.models import _PLAIN_HTTP_URL, _not_uri_at, check_absolute_http_url, check_url_fully

URL = "https://v3b.fal.media/files/x"


@pytest.mark.parametrize(
    ("data", "name", "how"),
    [
        (b"url\nhttps://a/b.png\n", "utf-8", "default"),
        (codecs.BOM_UTF8 + b"url\n", "utf-8", "bom"),
        (codecs.BOM_UTF16_LE + "url\n".encode("utf-16-le"), "utf-16-le", "bom"),
        (codecs.BOM_UTF16_BE + "url\n".encode("utf-16-be"), "utf-16-be", "bom"),
        (codecs.BOM_UTF32_LE + "url\n".encode("utf-32-le"), "utf-32-le", "bom"),
        ("url,prompt\nx,Café crème brûlée à la française\n".encode("cp1252"), "cp1252", "detected"),
        ("url,prompt\nx,café é è ê ë à\nx,\xff\n".encode(), "utf-8", "default"),  # UTF-8 with one stray byte
    ],
)
def test_the_encoding_is_chosen_from_bom_utf8_or_detection(data: bytes, name: str, how: str) -> None:
    """A BOM decides; else UTF-8 when the prefix reads as UTF-8; else charset-normalizer's (cp1252-leaning) guess."""
    chosen = choose_encoding(data)
    assert (chosen.name, chosen.how) == (name, how)


def test_a_forced_encoding_wins_and_still_skips_its_own_bom() -> None:
    """``--encoding`` overrides the guess; a BOM of that same encoding is still skipped."""
    assert choose_encoding(b"url\n\xe9\n", "latin-1").how == "forced"
    assert choose_encoding(codecs.BOM_UTF8 + b"url\n", "utf-8").bom == 3


@pytest.mark.parametrize(
    ("header", "delimiter"),
    [("url,type", ","), ("url;type;prompt", ";"), ("url\ttype", "\t"), ("url|type", "|"), ("url", ","),
     ('"a;b",c', ","), ("url;type,prompt;x", ";")],
)  # fmt: skip
def test_the_delimiter_is_sniffed_from_the_header(header: str, delimiter: str) -> None:
    """The most frequent of , ; tab | outside quotes, comma when none."""
    assert sniff_delimiter(header) == delimiter


@pytest.mark.parametrize(
    ("text", "format_"),
    [("[{}]", "json"), ('  {"url": "x"}\n{"url": "y"}\n', "jsonl"), ('{\n  "url": "x"\n}\n', "json"),
     ("# list\n\nhttps://a/b.png\n", "urls"), ("url,type\n", "csv"), ("https://a/b.png,image\n", "csv")],
)  # fmt: skip
def test_the_format_is_read_from_the_content(text: str, format_: str) -> None:
    """What the first characters say when the name does not."""
    assert format_from_content(text) == format_


def test_line_ends() -> None:
    """LF, CRLF and a lone CR are told apart."""
    assert [line_ends(t) for t in ("a\nb", "a\r\nb", "a\rb", "a")] == ["lf", "crlf", "cr", "lf"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("Image", "image"), (" VIDEO ", "video"), ("3D", "3d"), ("image/png", "image"), ("video/mp4; codecs=x", "video"),
     ("audio/mpeg", "audio"), ("model/gltf-binary", "3d"), ("model/obj", "3d"), ("picture", "picture"), (5, 5)],
)  # fmt: skip
def test_types_are_read_case_insensitively_and_from_mime_types(value: object, expected: object) -> None:
    """A type as a person or a server writes it becomes the API's word; anything else is left to fail validation."""
    assert normalize_type(value) == expected


def test_favorite_and_tag_cells() -> None:
    """favorite takes y/n too; tag_ids split on ';', else ','; a JSON array stays one."""
    assert [parse_favorite(c) for c in ("Y", "n", "yes", "maybe")] == [True, False, True, None]
    assert parse_tag_ids("a; b") == ["a", "b"]
    assert parse_tag_ids("a, b ,") == ["a", "b"]
    assert parse_tag_ids('["a,b"]') == ["a,b"]


@pytest.mark.parametrize(
    ("iri", "uri"),
    [
        (f"{URL}/東京.png", f"{URL}/%E6%9D%B1%E4%BA%AC.png"),
        (f"{URL}/a.png?q=é#frä", f"{URL}/a.png?q=%C3%A9#fr%C3%A4"),
        ("https://bücher.example:8443/a.png", "https://xn--bcher-kva.example:8443/a.png"),
        (f"{URL}/already%20encoded.png", f"{URL}/already%20encoded.png"),
    ],
)
def test_iris_map_to_uris_as_rfc_3987_says(iri: str, uri: str) -> None:
    """Non-ASCII characters become percent-encoded UTF-8 octets (the host punycode); ASCII is untouched."""
    assert iri_to_uri(iri) == uri
    assert check_absolute_http_url(uri) == uri


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"{URL}/my file.png", "a space at character"),
        (f"{URL}/a<b>.png", "'<' at character"),
        (f"{URL}/a{{b}}.png", "'{' at character"),
        (f"{URL}/a|b.png", "'|'"),
        (f"{URL}/a\\b.png", "'\\\\'"),
        (f"{URL}/a^b.png", "'^'"),
        (f"{URL}/a`b.png", "'`'"),
        (f'{URL}/a"b.png', "'\"'"),
        (f"{URL}/a.png#x#y", "second '#'"),
        (f"{URL}/a%zz.png", "malformed escape '%zz'"),
        (f"{URL}/a%2.png", "malformed escape"),
        (f"{URL}/東京.png", "non-ASCII"),
    ],
)
def test_characters_no_uri_may_hold_are_rejected_saying_where(url: str, message: str) -> None:
    """The URL check (the client's and the fake server's) refuses what is not a URI, naming the place."""
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        check_absolute_http_url(url)
    assert "character" in str(info.value)


def test_a_space_suggests_percent_20() -> None:
    """The message for a space says what to write instead."""
    with pytest.raises(ValueError, match="write it as %20"):
        check_absolute_http_url(f"{URL}/my file.png")


@pytest.mark.parametrize(
    ("path", "record", "found"),
    [
        ("image.url", {"image": {"url": "u"}}, "u"),
        ("images[*].url", {"images": [{"url": "a"}, {}, {"url": "b"}]}, ["a", MISSING, "b"]),
        ("outputs[1].video.url", {"outputs": [{}, {"video": {"url": "v"}}]}, "v"),
        ("image.url", {"image": "not an object"}, MISSING),
        ("images[*].url", {"images": None}, MISSING),
    ],
)
def test_json_paths(path: str, record: dict[str, Any], found: object) -> None:
    """A path finds a value, a list of values for [*], or MISSING; it never raises."""
    assert parse_path(path).resolve(record) == found


@pytest.mark.parametrize("bad", ["a..b", "a[x]", "a[*].b[*]", "[0]"])
def test_malformed_paths_are_config_errors(bad: str) -> None:
    """A path that cannot be read is refused before any reading."""
    with pytest.raises(ConfigError):
        parse_path(bad)


def test_fal_output_shapes() -> None:
    """Each known shape gives its files, typed by content_type or key, with the record's prompt."""
    record = {
        "images": [{"url": "a", "content_type": "image/png"}],
        "video": {"url": "v"},
        "model_glb": {"url": "m", "content_type": "application/octet-stream"},
        "prompt": "p",
    }
    assert output_items(record) == [
        ("images[*].url", 0, {"prompt": "p", "url": "a", "type": "image"}),
        ("video.url", 1, {"prompt": "p", "url": "v", "type": "video"}),
        ("model_glb.url", 2, {"prompt": "p", "url": "m", "type": "3d"}),
    ]
    assert output_items({"video": {"url": "v", "content_type": "video/mp4"}}) == [
        ("video.url", None, {"url": "v", "type": "video"})
    ]
    assert output_items({"seed": 1}) == []


def test_a_header_close_to_a_field_gets_a_did_you_mean(tmp_path: Path) -> None:
    """An unknown column like ``Prompts`` is named with the field it probably means."""
    path = tmp_path / "m.csv"
    path.write_text(f"Url,Prompts\n{URL}/a.png,hi\n")
    events: list[tuple[str, dict[str, Any]]] = []
    rows = list(read_manifest(ManifestSource.open(str(path)), warn=lambda e, **f: events.append((e, f))))
    assert rows[0].request is not None
    unknown = [fields for event, fields in events if event == "manifest.unknown_columns"]
    assert unknown[0]["did_you_mean"] == {"Prompts": "prompt"}


def test_a_bad_delimiter_or_encoding_option_is_a_config_error() -> None:
    """Options are checked when built."""
    with pytest.raises(ConfigError, match="delimiter"):
        ManifestOptions(delimiter=";;")
    with pytest.raises(ConfigError, match="unknown encoding"):
        ManifestOptions(encoding="no-such-codec")


def test_the_uri_check_finds_the_same_first_problem_as_one_combined_pattern() -> None:
    """The three cheap scans of ``_not_uri_at`` stop where the single three-way pattern they replace stopped."""
    combined = re.compile(r"[^A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]|%(?![0-9A-Fa-f]{2})|(?<=#)[^#]*#")
    rng = random.Random(7)
    alphabet = "ab/#%2F fz<東\t"
    for _ in range(5000):
        url = "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
        expected = combined.search(url)
        assert _not_uri_at(url) == (expected.start() if expected else None), url


@settings(max_examples=300, deadline=None)
@given(st.from_regex(_PLAIN_HTTP_URL, fullmatch=True))
def test_plain_url_fast_path_accepts_only_what_the_full_checks_accept(url: str) -> None:
    """Every URL the fast path takes as it is passes every check of the full path unchanged."""
    assert check_url_fully(url) == url
    assert check_absolute_http_url(url) == url
