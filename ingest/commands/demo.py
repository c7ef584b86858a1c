"""``ingest demo``: the whole job end to end on the embedded fake server, no key needed.

1. copy the bundled example manifests (``ingest/data/demo``: a CSV and a JSONL, a few hundred rows, a handful
   deliberately invalid, two repeats) into the demo folder;
2. start the fake Assets API on a free loopback port with the ``demo`` fault profile (a few 429s, 5xx and slow
   answers, so that retries show);
3. run the real pipeline, print the summary, the server's ledger and where the results file is;
4. run it again on the same results file and show that the rerun sends nothing;
5. end with ``ingest report`` of the results file.

On a terminal the runs show the live progress display.

It exits 0 when the demo behaved as promised (every valid row created exactly once, the rerun sent zero requests).
"""

from __future__ import annotations

import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import anyio

from ingest.commands.report import build_report, render_text
from ingest.credentials import ApiKey
from ingest.fakeserver import FakeServerConfig, load_profile, running_fake_server
from ingest.logs import configure_logging
from ingest.manifest.source import ManifestSource
from ingest.run.pipeline import RunConfig, RunReport, run_pipeline
from ingest.upload.client import ClientOptions

DEMO_KEY = "fake-key"
MANIFESTS = ("media.csv", "media.jsonl")


def copy_manifests(directory: Path) -> list[Path]:
    """Put fresh copies of the bundled manifests in ``directory``; removes an earlier demo's results."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.jsonl").unlink(missing_ok=True)
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
    config_server = FakeServerConfig(api_key=DEMO_KEY, faults=load_profile("demo"))
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

    succeeded = first.stats.by_status.get("succeeded", 0)
    ok = sent == 0 and ledger["duplicate_bodies"] == 0 and ledger["created"] == succeeded
    say(f"\n== ingest report {results}\n")
    say(render_text(build_report([results])))
    say(f"\nresults file: {results}  (one JSON line per outcome; try: grep '\"invalid\"' {results})")
    say(
        "demo "
        + (
            "passed: every valid row created exactly once, and the rerun sent nothing."
            if ok
            else "FAILED: see the figures above."
        )
    )
    return 0 if ok else 1


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
