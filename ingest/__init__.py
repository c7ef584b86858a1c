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

from ingest.admission.keys import KeyDeriver
from ingest.cli.run import run_config
from ingest.commands.report import build_report, render_json, render_text
from ingest.credentials import ApiKey, resolve_api_key
from ingest.errors import IngestError
from ingest.manifest.source import ManifestOptions, ManifestSource
from ingest.results.record import Result, Status
from ingest.run.pipeline import RunConfig, RunReport, run_pipeline
from ingest.settings import Settings, build_settings
from ingest.upload.client import ClientOptions
from ingest.upload.retry import RetryPolicy
from ingest.version import __version__

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
