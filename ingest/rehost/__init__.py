"""The rehost stage: media that is not on fal (local files, buckets, other CDNs) is uploaded into fal storage,
exactly as fal's own client does it, before its fal url is registered.

Modules: ``sources`` (where bytes come from, fingerprints), ``content_types`` (our extension table), ``storage``
(the protocol: token, retries), ``client`` (the storage operations), ``multipart`` (large files in bounded memory),
``bandwidth`` (``--bwlimit``), ``journal`` (durable ``uploaded`` records and multipart progress), ``stage``
(``Rehoster``: one source to one fal url).
"""

from typing import TYPE_CHECKING

from ingest.lazy import lazy_names as _lazy_names
from ingest.rehost.options import (
    DEFAULT_STORAGE_URL,
    MULTIPART_THRESHOLD,
    PART_SIZE,
    RehostConfig,
    RehostOptions,
)

if TYPE_CHECKING:
    from ingest.rehost.content_types import content_type_for
    from ingest.rehost.journal import RehostJournal, journal_path
    from ingest.rehost.multipart import PartBuffers
    from ingest.rehost.sources import Fingerprint, Source, SourceError, Sources, source_kind
    from ingest.rehost.stage import Rehoster, SourceChanged, create_rehoster
    from ingest.rehost.storage import StorageError, StorageRetry, UnknownUpload, safe_file_name

# The stage itself (and aiohttp with it) is imported on first use: the settings above are all a command that
# sends nothing needs.
_HOMES = {
    "Fingerprint": "ingest.rehost.sources",
    "PartBuffers": "ingest.rehost.multipart",
    "RehostJournal": "ingest.rehost.journal",
    "Rehoster": "ingest.rehost.stage",
    "Source": "ingest.rehost.sources",
    "SourceChanged": "ingest.rehost.stage",
    "SourceError": "ingest.rehost.sources",
    "Sources": "ingest.rehost.sources",
    "StorageError": "ingest.rehost.storage",
    "StorageRetry": "ingest.rehost.storage",
    "UnknownUpload": "ingest.rehost.storage",
    "content_type_for": "ingest.rehost.content_types",
    "create_rehoster": "ingest.rehost.stage",
    "journal_path": "ingest.rehost.journal",
    "safe_file_name": "ingest.rehost.storage",
    "source_kind": "ingest.rehost.sources",
}
__getattr__ = _lazy_names(__name__, globals(), _HOMES)

__all__ = [
    "DEFAULT_STORAGE_URL",
    "MULTIPART_THRESHOLD",
    "PART_SIZE",
    "Fingerprint",
    "PartBuffers",
    "RehostConfig",
    "RehostJournal",
    "RehostOptions",
    "Rehoster",
    "Source",
    "SourceChanged",
    "SourceError",
    "Sources",
    "StorageError",
    "StorageRetry",
    "UnknownUpload",
    "content_type_for",
    "create_rehoster",
    "journal_path",
    "safe_file_name",
    "source_kind",
]
