"""ingest: an async bulk ingestion worker for fal's Assets API (``POST /v1/assets/uploads``).

The library surface, for running the pipeline from Python instead of the ``ingest`` command::

    import anyio
    from pathlib import Path
    from ingest import ApiKey, ClientOptions, ManifestSource, RunConfig, run_pipeline

    config = RunConfig(
        sources=[ManifestSource.open("media.csv")],
        results_path=Path("media.results.jsonl"),
        client=ClientOptions(base_url="https://api.fal.ai/v1", concurrency=16),
        rate=10,
    )
    report = anyio.run(run_pipeline, config, ApiKey("…"))
    print(report.stats, report.exit_code)

``build_settings`` + ``run_config`` give the same ``RunConfig`` the CLI builds (flags > env > file > defaults).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ingest.lazy import lazy_names as _lazy_names
from ingest.version import __version__

if TYPE_CHECKING:
    from ingest.admission.keys import KeyDeriver
    from ingest.cli.run import run_config
    from ingest.commands.report import build_report, render_json, render_text
    from ingest.credentials import ApiKey, resolve_api_key
    from ingest.errors import IngestError
    from ingest.manifest.source import ManifestOptions, ManifestSource
    from ingest.results.record import Result, Status
    from ingest.run.pipeline import RunConfig, RunReport, run_pipeline
    from ingest.settings import Settings, build_settings
    from ingest.upload.options import ClientOptions
    from ingest.upload.retry import RetryPolicy

# Where each name of the library surface lives: imported on first use (``ingest.lazy``), not with the package.
_HOMES = {
    "KeyDeriver": "ingest.admission.keys",
    "run_config": "ingest.cli.run",
    "build_report": "ingest.commands.report",
    "render_json": "ingest.commands.report",
    "render_text": "ingest.commands.report",
    "ApiKey": "ingest.credentials",
    "resolve_api_key": "ingest.credentials",
    "IngestError": "ingest.errors",
    "ManifestOptions": "ingest.manifest.source",
    "ManifestSource": "ingest.manifest.source",
    "Result": "ingest.results.record",
    "Status": "ingest.results.record",
    "RunConfig": "ingest.run.pipeline",
    "RunReport": "ingest.run.pipeline",
    "run_pipeline": "ingest.run.pipeline",
    "Settings": "ingest.settings",
    "build_settings": "ingest.settings",
    "ClientOptions": "ingest.upload.options",
    "RetryPolicy": "ingest.upload.retry",
}


__getattr__ = _lazy_names(__name__, globals(), _HOMES)

__all__ = [
    "ApiKey",
    "ClientOptions",
    "IngestError",
    "KeyDeriver",
    "ManifestOptions",
    "ManifestSource",
    "Result",
    "RetryPolicy",
    "RunConfig",
    "RunReport",
    "Settings",
    "Status",
    "__version__",
    "build_report",
    "build_settings",
    "render_json",
    "render_text",
    "resolve_api_key",
    "run_config",
    "run_pipeline",
]
