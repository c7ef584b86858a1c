"""The rehost stage: from a manifest url to a fal url, exactly once (``Rehoster.rehost``).

1. Open the source and fingerprint it (no bytes read).
2. The journal already has an ``uploaded`` record for the key: same fingerprint, reuse its url (no upload); another
   fingerprint, the source changed after its upload: ``SourceChanged`` (the key's body must never change).
3. ``dedupe_content`` (local files): hash the file first; bytes already uploaded under another name reuse that url.
4. Upload: one request up to ``MULTIPART_THRESHOLD``, else ``MultipartUpload``. The sha256 is of the bytes as sent.
5. Journal the ``uploaded`` record (fsynced) and return it: only then may the url be registered.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import structlog

from ingest.credentials import ApiKey
from ingest.rehost.bandwidth import Bandwidth
from ingest.rehost.client import StorageClient
from ingest.rehost.content_types import content_type_for
from ingest.rehost.journal import RehostJournal
from ingest.rehost.multipart import MultipartUpload, PartBuffers
from ingest.rehost.options import RehostConfig, RehostOptions
from ingest.rehost.sources import Fingerprint, Source, SourceError, Sources
from ingest.rehost.storage import Requests, StorageRetry, TokenCache
from ingest.rehost.tally import Tally, Transfer

log = structlog.get_logger("ingest.rehost.stage")


class SourceChanged(Exception):
    """The source's fingerprint differs from the one recorded when it was uploaded."""


def create_rehoster(
    session: aiohttp.ClientSession,
    api_key: ApiKey,
    config: RehostConfig,
    *,
    journal: RehostJournal,
    policy: StorageRetry,
    rng: random.Random,
) -> Rehoster:
    """A rehoster sharing the run's session; part buffers: one per upload slot, plus one being filled and one filled
    ready for the next free slot (with one spare, a slot waited for the reader after every part)."""
    requests = Requests(session, policy, rng, slots=anyio.CapacityLimiter(config.upload_concurrency))
    tokens = TokenCache(session, api_key, config.storage_url)
    client = StorageClient(requests, tokens, bandwidth=Bandwidth(config.bwlimit))
    buffers = PartBuffers(config.upload_concurrency + 2)
    return Rehoster(client, Sources(session), journal, buffers, config.options)


class Rehoster:
    """Uploads sources into fal storage for one run."""

    def __init__(
        self,
        client: StorageClient,
        sources: Sources,
        journal: RehostJournal,
        buffers: PartBuffers,
        options: RehostOptions,
    ) -> None:
        self.client, self.sources, self.journal = client, sources, journal
        self.buffers, self.options = buffers, options
        self.tally = Tally()  # bytes looked at, left and sent, live (progress by bytes)
        self.uploads = 0  # sources uploaded by this run
        self.reused = 0  # sources whose earlier upload was reused

    async def fingerprint(self, url: str, manifest_dir: Path) -> tuple[Source, Fingerprint]:
        """The source of ``url`` and its current fingerprint."""
        source = self.sources.open(url, manifest_dir=manifest_dir)
        return source, await source.stat()

    async def rehost(self, key: str, url: str, manifest_dir: Path) -> dict[str, Any]:
        """The ``rehost`` object of ``url`` (see the module docstring); ``SourceError``, ``StorageError`` or
        ``SourceChanged`` when it cannot be had."""
        transfer = self.tally.start()
        try:
            return await self._rehost(key, url, manifest_dir, transfer)
        finally:
            transfer.close()

    async def _rehost(self, key: str, url: str, manifest_dir: Path, transfer: Transfer) -> dict[str, Any]:
        source, fingerprint = await self.fingerprint(url, manifest_dir)
        prior = self.journal.uploaded.get(key)
        if prior is not None:
            if prior["fingerprint"] != fingerprint.as_dict():
                raise SourceChanged(f"{source.location} changed after it was uploaded to {prior['url']}")
            self.reused += 1
            return prior
        started = time.monotonic()
        content_type = content_type_for(source.file_name)
        transfer.expect(fingerprint.size)
        fal_url, sha256, size, how = await self._upload(key, source, fingerprint, content_type, transfer)
        rehost = {
            "source": url,
            "kind": source.kind,
            "fingerprint": fingerprint.as_dict(),
            "sha256": sha256,
            "size": size,
            "content_type": content_type,
            "url": fal_url,
            "how": how,
            "upload_ms": int((time.monotonic() - started) * 1000),
        }
        await self.journal.record_uploaded(key, rehost)
        log.info("rehost.uploaded", key=key, source=url, kind=source.kind, size=size, how=how, url=fal_url)
        return rehost

    async def _upload(
        self, key: str, source: Source, fingerprint: Fingerprint, content_type: str, transfer: Transfer
    ) -> tuple[str, str, int, str]:
        """(fal url, sha256, size, how): how is "single", "multipart" or "deduplicated"."""
        if self.options.dedupe_content and source.kind == "local":
            digest, size = await _hash(source)
            if (known := self.journal.by_sha256.get(digest)) is not None:
                self.reused += 1
                return known, digest, size, "deduplicated"
        size_known = fingerprint.size
        if size_known is None or size_known > self.options.multipart_threshold:
            upload = MultipartUpload(
                self.client,
                source,
                key=key,
                fingerprint=fingerprint,
                content_type=content_type,
                journal=self.journal,
                buffers=self.buffers,
                workers=self.options.part_workers,
                max_age=self.options.max_journal_age,
                transfer=transfer,
            )
            result = await upload.run()
            self.uploads += 1
            return result.url, result.sha256, result.size, "multipart"
        return await self._single(source, size_known, content_type, transfer)

    async def _single(
        self, source: Source, size: int, content_type: str, transfer: Transfer
    ) -> tuple[str, str, int, str]:
        hashers: list[_Hashing] = []

        def body() -> AsyncGenerator[bytes]:
            hashing = _Hashing(source, size, transfer)
            hashers.append(hashing)
            return hashing.read()

        fal_url = await self.client.upload(body, size=size, file_name=source.file_name, content_type=content_type)
        self.uploads += 1
        return fal_url, hashers[-1].digest.hexdigest(), size, "single"

    def __repr__(self) -> str:
        return f"Rehoster(uploads={self.uploads}, reused={self.reused}, {self.tally!r}, {self.journal!r})"


class _Hashing:
    """One attempt's read of a source, hashed as it goes out; a size other than the fingerprint's is an error."""

    def __init__(self, source: Source, size: int, transfer: Transfer) -> None:
        self.source, self.size, self.transfer = source, size, transfer
        self.digest = hashlib.sha256()  # of the bytes read so far

    async def read(self) -> AsyncGenerator[bytes]:
        seen = 0
        async with contextlib.aclosing(self.source.read(digest=self.digest)) as chunks:
            async for chunk in chunks:
                seen += len(chunk)
                if seen > self.size:
                    raise SourceError(f"{self.source.location} grew while being read", retryable=True)
                self.transfer.sent(len(chunk))
                yield chunk
        if seen != self.size:
            raise SourceError(f"{self.source.location} shrank while being read", retryable=True)


async def _hash(source: Source) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    async with contextlib.aclosing(source.read(digest=digest)) as stream:
        async for chunk in stream:
            size += len(chunk)
    return digest.hexdigest(), size
