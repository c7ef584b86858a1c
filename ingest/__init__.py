"""ingest: an async bulk ingestion worker for fal's Assets API (``POST /v1/assets/uploads``)."""

__version__ = "0.1.0"
