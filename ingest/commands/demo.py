"""``ingest demo``: the whole job end to end on the embedded fake server, no key needed.

1. copy the bundled example manifests (``ingest/data/demo``: a CSV and a JSONL, a few hundred rows, a handful
   deliberately invalid, two repeats) into the demo folder;
2. start the fake Assets API on a free loopback port with the ``demo`` fault profile (a few 429s, 5xx and slow
   answers, so that retries show);
3. run the real pipeline, print the summary, the server's ledger and where the results file is;
4. run it again on the same results file and show that the rerun sends nothing;
5. rehost: run ``local.csv``, three small bundled local files named by relative paths, which are uploaded into the
   fake's storage (fal's storage protocol, on the same port) and registered with the urls it issued (the fake is
   strict: it refuses any other url); each upload is fetched back and its sha256 compared with the file's;
6. end with ``ingest report`` of the results file.

On a terminal the runs show the live progress display.

It exits 0 when the demo behaved as promised (every valid row created exactly once, the rerun sent zero requests,
every local file landed byte for byte).
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import anyio
import orjson

from ingest.commands.report import build_report, render_text
from ingest.credentials import ApiKey
from ingest.fakeserver import FakeServer, FakeServerConfig, load_profile, running_fake_server
from ingest.logs import configure_logging
from ingest.manifest.source import ManifestOptions, ManifestSource
from ingest.rehost.options import RehostConfig
from ingest.run.pipeline import RunConfig, RunReport, run_pipeline
from ingest.upload.options import ClientOptions

DEMO_KEY = "fake-key"
MANIFESTS = ("media.csv", "media.jsonl")
LOCAL_MANIFEST = "local.csv"  # the rehost part: paths relative to it, under media/


def copy_manifests(directory: Path) -> list[Path]:
    """Put fresh copies of the bundled manifests in ``directory``; removes an earlier demo's results."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in ("results.jsonl", "local.results.jsonl", "local.results.jsonl.rehost.jsonl"):
        (directory / stale).unlink(missing_ok=True)
    copies = []
    for name in MANIFESTS:
        target = directory / name
        with resources.as_file(resources.files("ingest") / "data" / "demo" / name) as source:
            shutil.copyfile(source, target)
        copies.append(target)
    return copies


def run_demo(directory: Path, *, out: TextIO | None = None) -> int:
    """Run the demo in ``directory``; see the module docstring."""
    out = out or sys.stdout
    configure_logging(fmt="console", level="warning")
    manifests = copy_manifests(directory)
    result: int = anyio.run(_demo, manifests, directory / "results.jsonl", out)
    return result


async def _demo(manifests: list[Path], results: Path, out: TextIO) -> int:
    say = _printer(out)
    config_server = FakeServerConfig(api_key=DEMO_KEY, faults=load_profile("demo"), strict_urls=True)
    async with running_fake_server(config_server) as server:
        say(f"fake Assets API on {server.url} (fault profile 'demo': some 429, 5xx and slow answers)")
        config = RunConfig(
            sources=[ManifestSource.open(str(path)) for path in manifests],
            results_path=results,
            client=ClientOptions(base_url=server.url, concurrency=16, request_timeout=10.0),
            rate=200.0,
            progress="bar" if sys.stderr.isatty() else "off",
        )
        say(f"\n== run 1: ingest run {' '.join(str(p) for p in manifests)} --rate 200 --concurrency 16")
        first = await run_pipeline(config, ApiKey(DEMO_KEY))
        _print_report(say, first)
        ledger = server.ledger.stats()
        say(
            f"server ledger: {ledger['created']} assets created, {ledger['replayed']} replays, "
            f"{ledger['duplicate_bodies']} duplicate assets, {ledger['requests']} requests "
            f"({_statuses(ledger)})"
        )

        say("\n== run 2: the same command again (resume: everything is already done)")
        requests_before = server.ledger.stats()["requests"]
        second = await run_pipeline(config, ApiKey(DEMO_KEY))
        sent = server.ledger.stats()["requests"] - requests_before
        _print_report(say, second)
        say(f"server received {sent} upload requests during the rerun")
        rehosted = await rehost_demo(server, results.parent, say)

    succeeded = first.stats.by_status.get("succeeded", 0)
    ok = sent == 0 and ledger["duplicate_bodies"] == 0 and ledger["created"] == succeeded and rehosted
    local = results.parent / "local.results.jsonl"
    say(f"\n== ingest report {results} {local}\n")
    say(render_text(build_report([results, local])))
    say(f"\nresults file: {results}  (one JSON line per outcome; try: grep '\"invalid\"' {results})")
    say(
        "demo "
        + (
            "passed: every valid row created exactly once, the rerun sent nothing, every local file landed intact."
            if ok
            else "FAILED: see the figures above."
        )
    )
    return 0 if ok else 1


async def rehost_demo(server: FakeServer, directory: Path, say: Any) -> bool:
    """Run 3: rehost the bundled local files; whether each landed byte for byte under a url the storage issued."""
    manifest = _copy_local_media(directory)
    results = directory / "local.results.jsonl"
    config = RunConfig(
        sources=[ManifestSource.open(str(manifest))],
        results_path=results,
        client=ClientOptions(base_url=server.url, concurrency=4, request_timeout=10.0),
        rate=200.0,
        progress="off",
        rehost_mode="auto",
        rehost=RehostConfig(storage_url=server.storage_url),
        manifest_options=ManifestOptions(allow_sources=True),
    )
    say(f"\n== run 3: ingest run {manifest} --storage-url {server.storage_url}  (rehost: local files into fal storage)")
    report = await run_pipeline(config, ApiKey(DEMO_KEY))
    _print_report(say, report)
    landed = 0
    async with aiohttp.ClientSession() as session:
        for record in _records(results):
            rehost = record["rehost"]
            served = hashlib.sha256(await _fetch(session, rehost["url"])).hexdigest()
            local = hashlib.sha256((directory / record["item"]["url"]).read_bytes()).hexdigest()
            same = served == local == rehost["sha256"]
            landed += same
            say(
                f"  {record['item']['url']} ({rehost['size']:,} B, {rehost['content_type']}) → {rehost['url']}  "
                f"sha256 {served[:12]}… {'matches' if same else 'DIFFERS'}"
            )
    return report.exit_code == 0 and landed == 3


def _copy_local_media(directory: Path) -> Path:
    demo = resources.files("ingest") / "data" / "demo"
    (directory / "media").mkdir(parents=True, exist_ok=True)
    for entry in (demo / "media").iterdir():
        (directory / "media" / entry.name).write_bytes(entry.read_bytes())
    target = directory / LOCAL_MANIFEST
    target.write_bytes((demo / LOCAL_MANIFEST).read_bytes())
    return target


def _records(results: Path) -> list[dict[str, Any]]:
    lines = (orjson.loads(line) for line in results.read_bytes().splitlines() if line.strip())
    return [record for record in lines if record.get("status") == "succeeded" and record.get("rehost")]


async def _fetch(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.get(url) as resp:
        return await resp.read()


def _print_report(say: Any, report: RunReport) -> None:
    s = report.stats.snapshot()
    say(
        f"  {s['succeeded']} succeeded, {s['failed']} failed, {s['invalid']} invalid, {s['duplicate']} duplicate, "
        f"{s['skipped']} skipped (already done)"
    )
    say(f"  {s['requests']} requests, {s['retries']} retries, {s['elapsed_s']:.1f}s, exit code {report.exit_code}")


def _statuses(ledger: dict[str, Any]) -> str:
    by_status = ledger.get("by_status", {})
    return ", ".join(f"{status}: {count}" for status, count in sorted(by_status.items()))


def _printer(out: TextIO) -> Any:
    def say(text: str) -> None:
        print(text, file=out, flush=True)

    return say
