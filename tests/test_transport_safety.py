"""Where the key and the requests may go (issue 9, findings 10, 11, 13, 14 and the --rate part of 9), through the
real CLI against a hostile server on loopback: a certificate that does not verify stops the run at once (exit 3);
HTTPS_PROXY / NO_PROXY are honoured as curl honours them, never for loopback and never with the key in clear;
credentials in --base-url are refused and those in media URLs masked in records; hosts are read as browsers read
them; a --rate that cannot be paced is refused by name.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path

import orjson
import pytest

from tests.helpers.hostile_server import (
    KEY,
    PROXIED_HOST,
    ProxyServer,
    asset_reply,
    cli_env,
    hostile_server,
    ingest,
    records,
    run_args,
    tls_context,
    write_manifest,
)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    """A self-signed server certificate (for 127.0.0.1 and the proxied test host), made once."""
    return tls_context(tmp_path_factory.mktemp("tls"))


def test_a_certificate_that_does_not_verify_stops_the_run_at_once(
    tmp_path: Path, tls: tuple[ssl.SSLContext, Path]
) -> None:
    """TLS verification failure is a configuration error: exit 3 within seconds, one line saying so and naming
    --ca-bundle, no item recorded as failed (they stay pending)."""
    context, _ = tls
    manifest, results = write_manifest(tmp_path / "m.jsonl", 20), tmp_path / "r.jsonl"
    with hostile_server(lambda hit: asset_reply(hit.body), ssl_context=context) as server:
        started = time.monotonic()
        done = ingest(*run_args(manifest, results, server.url, "--max-attempts", "8", "--backoff-initial", "1"))
        took = time.monotonic() - started
        assert server.hits == []
    assert done.code == 3, done.stderr[-3000:]
    assert took < 15
    assert "TLS failure" in done.stderr and "--ca-bundle" in done.stderr
    assert not results.exists() or records(results) == []


@pytest.mark.parametrize("how", ["--ca-bundle", "SSL_CERT_FILE"])
def test_a_trusted_ca_makes_the_same_server_work(tmp_path: Path, tls: tuple[ssl.SSLContext, Path], how: str) -> None:
    """The server's CA given with --ca-bundle, or with SSL_CERT_FILE, is trusted: every item succeeds."""
    context, cert = tls
    manifest, results = write_manifest(tmp_path / "m.jsonl"), tmp_path / "r.jsonl"
    extra = ["--ca-bundle", str(cert)] if how == "--ca-bundle" else []
    env = cli_env(SSL_CERT_FILE=str(cert)) if how == "SSL_CERT_FILE" else cli_env()
    with hostile_server(lambda hit: asset_reply(hit.body), ssl_context=context) as server:
        done = ingest(*run_args(manifest, results, server.url, *extra), env=env)
    assert done.code == 0, done.stderr[-3000:]
    assert {r["status"] for r in records(results)} == {"succeeded"}


def test_a_missing_ca_bundle_is_a_usage_error(tmp_path: Path) -> None:
    """--ca-bundle naming no readable PEM file is exit 2 naming the flag, before anything is sent."""
    manifest = write_manifest(tmp_path / "m.jsonl")
    done = ingest(*run_args(manifest, tmp_path / "r.jsonl", "https://127.0.0.1:9/v1", "--ca-bundle", tmp_path / "no"))
    assert done.code == 2
    assert "--ca-bundle" in done.stderr and "Traceback" not in done.stderr


def test_https_proxy_is_used_through_a_connect_tunnel(tmp_path: Path, tls: tuple[ssl.SSLContext, Path]) -> None:
    """With HTTPS_PROXY set, an https API is reached through the proxy by CONNECT: the proxy sees host and port,
    never the key (which travels inside TLS)."""
    context, cert = tls
    manifest, results = write_manifest(tmp_path / "m.jsonl"), tmp_path / "r.jsonl"
    proxy = ProxyServer()
    with (
        hostile_server(lambda hit: asset_reply(hit.body), ssl_context=context) as server,
        proxy.running(),
    ):
        url = f"https://{PROXIED_HOST}:{server.port}/v1"
        env = cli_env(HTTPS_PROXY=proxy.url)
        done = ingest(*run_args(manifest, results, url, "--ca-bundle", str(cert)), env=env)
        assert len(server.hits) == 3
    assert done.code == 0, done.stderr[-3000:]
    assert proxy.requests and all(line.startswith(f"CONNECT {PROXIED_HOST}:") for line, _ in proxy.requests)
    assert all(KEY not in line + orjson.dumps(headers).decode() for line, headers in proxy.requests)


def test_no_proxy_and_loopback_go_direct(tmp_path: Path) -> None:
    """Loopback is never proxied, and NO_PROXY=* sends everything direct: the proxy sees nothing."""
    manifest, results = write_manifest(tmp_path / "m.jsonl"), tmp_path / "r.jsonl"
    proxy = ProxyServer()
    with hostile_server(lambda hit: asset_reply(hit.body)) as server, proxy.running():
        env = cli_env(HTTPS_PROXY=proxy.url, HTTP_PROXY=proxy.url, ALL_PROXY=proxy.url, NO_PROXY="*")
        done = ingest(*run_args(manifest, results, server.url), env=env)
        only_loopback = ingest(
            *run_args(manifest, tmp_path / "r2.jsonl", server.url), env=cli_env(HTTP_PROXY=proxy.url)
        )
    assert done.code == 0 and only_loopback.code == 0, done.stderr[-2000:] + only_loopback.stderr[-2000:]
    assert proxy.requests == []


def test_credentials_in_the_base_url_are_refused_without_printing_them(tmp_path: Path) -> None:
    """--base-url http://user:PASS@host is exit 2 before anything is sent, and the password is printed nowhere."""
    manifest, results = write_manifest(tmp_path / "m.jsonl"), tmp_path / "r.jsonl"
    with hostile_server(lambda hit: asset_reply(hit.body)) as server:
        url = server.url.replace("http://", "http://admin:PASSW0RD-x9@")
        done = ingest(*run_args(manifest, results, url))
        assert server.hits == []
    assert done.code == 2
    assert "PASSW0RD-x9" not in done.stderr + done.stdout
    assert "credentials" in done.stderr and "Traceback" not in done.stderr


def test_credentials_in_media_urls_are_masked_in_records(tmp_path: Path) -> None:
    """A media URL with user:pass@ is sent as given but stored with its credentials masked."""
    manifest, results = tmp_path / "m.jsonl", tmp_path / "r.jsonl"
    manifest.write_text(
        '{"url":"https://bob:S3CRET-pw@v3.fal.media/files/a.png","type":"image"}\n'
        '{"url":"https://bob:S3CRET-pw@v3.fal.media/files/b.png"}\n{"url":"https://eve:S3CRET-pw@","type":"image"}\n'
    )
    with hostile_server(lambda hit: asset_reply(hit.body)) as server:
        ingest(*run_args(manifest, results, server.url))
        assert "S3CRET-pw" in server.hits[0].body["url"]
    text = results.read_text()
    assert "S3CRET-pw" not in text
    assert "https://***@v3.fal.media/files/a.png" in text


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.com\\@v3.fal.media/x.png",
        "https://v3.fal.media@evil.com/x.png",
        "https://a@v3.fal.media@evil.com/x.png",
        "https://evil.com/?@v3.fal.media/x.png",
        "https://v3.fal.media.evil.com/x.png",
        "https://v3.fal.media%2eevil.com/x.png",
    ],
)
def test_require_fal_host_reads_the_host_as_a_browser_does(tmp_path: Path, url: str) -> None:
    """With --require-fal-host, a URL whose WHATWG host is not fal's is an invalid row, whatever urlsplit says."""
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(orjson.dumps({"url": url, "type": "image"}).decode() + "\n")
    done = ingest("validate", manifest, "--require-fal-host")
    assert done.code == 1, done.stdout + done.stderr
    # Invalid either way: not fal's host, or (a raw backslash) not a URI at all.
    assert "not a fal media host" in done.stdout or "a URI cannot hold it" in done.stdout


@pytest.mark.parametrize(
    "url", ["https://V3.FAL.MEDIA./x.png", "https://v3.fal\uff0emedia/x.png", "https://u:p@v3.fal.media/x"]
)
def test_fal_hosts_in_unusual_spellings_are_fal_hosts(tmp_path: Path, url: str) -> None:
    """Capitals, a trailing dot, a full-width dot (IDNA) and userinfo still name a fal host."""
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(orjson.dumps({"url": url, "type": "image"}).decode() + "\n")
    done = ingest("validate", manifest, "--require-fal-host")
    assert done.code == 0, done.stdout + done.stderr


@pytest.mark.parametrize("rate", ["inf", "nan", "1e-300", "1e300"])
def test_a_rate_that_cannot_be_paced_is_refused_naming_the_flag(tmp_path: Path, rate: str) -> None:
    """--rate inf / nan / 1e-300 / 1e300 is exit 2 with one line naming --rate, no traceback."""
    manifest = write_manifest(tmp_path / "m.jsonl")
    done = ingest(*run_args(manifest, tmp_path / "r.jsonl", "http://127.0.0.1:9/v1"), "--rate", rate)
    assert done.code == 2, done.stderr[-2000:]
    assert "--rate" in done.stderr and "Traceback" not in done.stderr
