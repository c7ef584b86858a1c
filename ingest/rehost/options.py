"""What a run's rehost stage is built from: plain settings, free of the HTTP client, so that the CLI and the run's
config can hold them without importing aiohttp (a command that sends nothing never pays for it)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_STORAGE_URL = "https://rest.fal.ai"
MULTIPART_THRESHOLD = 100 * 1024 * 1024  # larger files go up in parts (fal-client's threshold)
PART_SIZE = 10 * 1024 * 1024  # fal-client's part size
DEFAULT_MAX_JOURNAL_AGE = 6 * 3600.0  # seconds an unfinished multipart upload may be resumed


@dataclass(frozen=True, slots=True)
class RehostOptions:
    """How the stage behaves."""

    part_workers: int = 4  # part uploads in flight per file (the run-wide cap is the client's slots)
    max_journal_age: float = DEFAULT_MAX_JOURNAL_AGE
    dedupe_content: bool = False
    multipart_threshold: int = MULTIPART_THRESHOLD


@dataclass(frozen=True, slots=True)
class RehostConfig:
    """Everything a run's rehost stage is built from (resolved from settings by the CLI)."""

    storage_url: str = DEFAULT_STORAGE_URL
    upload_concurrency: int = 4  # storage requests in flight at once, for the whole run
    bwlimit: float | None = None  # bytes a second for all uploads together
    options: RehostOptions = RehostOptions()
