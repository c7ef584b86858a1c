"""``python -m ingest`` is the same as the ``ingest`` console script."""

from ingest.entry import console

console()
