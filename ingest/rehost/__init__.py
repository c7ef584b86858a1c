"""The rehost stage: media that is not on fal (local files, buckets, other CDNs) is uploaded into fal storage,
exactly as fal's own client does it, before its fal url is registered.

Modules: ``sources`` (where bytes come from, fingerprints), ``content_types`` (our extension table), ``storage``
(the protocol: token, retries), ``client`` (the storage operations), ``multipart`` (large files in bounded memory),
``bandwidth`` (``--bwlimit``), ``journal`` (durable ``uploaded`` records and multipart progress), ``stage``
(``Rehoster``: one source to one fal url).
"""

from ingest.rehost.content_types import content_type_for
from ingest.rehost.journal import RehostJournal, journal_path
from ingest.rehost.multipart import MULTIPART_THRESHOLD, PART_SIZE, PartBuffers
from ingest.rehost.sources import Fingerprint, Source, SourceError, Sources, source_kind
from ingest.rehost.stage import RehostConfig, Rehoster, RehostOptions, SourceChanged, create_rehoster
from ingest.rehost.storage import DEFAULT_STORAGE_URL, StorageError, StorageRetry, UnknownUpload, safe_file_name

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
