"""The knowledge base of every tenant: validation, ingestion, MongoDB writes, searches of this
replica's indexes, and the chunk changes that keep the other replicas' indexes current."""

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from switchboard.common.redaction import (
    ALL_KINDS,
    DEFAULT_PHONE_REGIONS,
    SECRET_KINDS,
    redactor_for,
)
from switchboard.common.tenants import TenantConfig
from switchboard.embeddings import Embedder, QueryEmbeddings, Vectors
from switchboard.embeddings.base import normalise
from switchboard.knowledge.ingest import (
    DocumentError,
    Section,
    chunk_sections,
    extract,
    normalise_content_type,
)
from switchboard.knowledge.metrics import INGESTED, QUERY_VECTORS, SEARCH_SECONDS
from switchboard.knowledge.settings import KnowledgeSettings
from switchboard.knowledge_index.index import Hit
from switchboard.knowledge_index.replica import IndexReplica, chunk_message, vector_bytes
from switchboard.knowledge_index.store import (
    DELETED,
    LIVE,
    DocumentRecord,
    KnowledgeStore,
    StoredChunk,
)
from switchboard.v1.knowledge_pb2 import KnowledgeChunkChange, KnowledgeDocument

log = logging.getLogger(__name__)

DOCUMENT_ID = re.compile(r"^[A-Za-z0-9._:/-]{1,128}$")
MAX_METADATA_ENTRIES = 32
MAX_METADATA_CHARS = 256


class DocumentNotFoundError(LookupError):
    """The tenant has no such document."""


@dataclass(frozen=True)
class UpsertOutcome:
    document_id: str
    version: int
    chunks: int
    unchanged: bool
    redacted: tuple[str, ...]


Publisher = Callable[[KnowledgeChunkChange], Awaitable[None]]
TenantLookup = Callable[[str], Awaitable[TenantConfig | None]]


def validate(document: KnowledgeDocument, settings: KnowledgeSettings) -> str:
    """The canonical content type; DocumentError naming the first problem found."""
    if not DOCUMENT_ID.match(document.document_id):
        raise DocumentError(
            "document_id must be 1-128 letters, digits or . _ - : / "
            f"(got {document.document_id[:40]!r})"
        )
    content_type = normalise_content_type(document.content_type)
    size = len(document.content.encode()) + len(document.content_bytes)
    if size == 0 or (not document.content_bytes and not document.content.strip()):
        raise DocumentError("the document is empty (content and content_bytes are empty)")
    if size > settings.max_document_bytes:
        raise DocumentError(
            f"the document has {size} bytes, more than the limit of {settings.max_document_bytes}"
        )
    if len(document.title) > settings.max_title_chars:
        raise DocumentError(f"title is longer than {settings.max_title_chars} characters")
    if document.source_url and not re.match(r"^https?://\S+$", document.source_url):
        raise DocumentError("source_url must be an http(s) URL")
    if len(document.metadata) > MAX_METADATA_ENTRIES:
        raise DocumentError(f"metadata has more than {MAX_METADATA_ENTRIES} entries")
    for key, value in document.metadata.items():
        if len(key) > MAX_METADATA_CHARS or len(value) > MAX_METADATA_CHARS:
            raise DocumentError(f"metadata {key[:40]!r}: keys and values are limited to 256")
    return content_type


def fingerprint(document: KnowledgeDocument, content_type: str, model: str, chunking: str) -> str:
    """What decides a document's chunks: the same fingerprint means the same chunks."""
    digest = hashlib.sha256()
    digest.update(document.content.encode())
    digest.update(document.content_bytes)
    head = json.dumps(
        [document.title, document.source_url, content_type, sorted(document.metadata.items())],
        ensure_ascii=False,
    )
    digest.update(f"\x00{head}\x00{model}\x00{chunking}".encode())
    return digest.hexdigest()


class KnowledgeBase:
    """What the gRPC service and the chunk-change consumer call."""

    def __init__(
        self,
        settings: KnowledgeSettings,
        *,
        store: KnowledgeStore,
        replica: IndexReplica,
        embedder: Embedder,
        publish: Publisher,
        tenants: TenantLookup,
    ) -> None:
        self._settings = settings
        self._store = store
        # This replica's indexes: a change made here is applied at once, before the topic
        # brings it to the other replicas.
        self.replica = replica
        self._embedder = embedder
        self._queries = QueryEmbeddings(
            embedder,
            settings.embeddings.query_cache_size,
            settings.embeddings.query_cache_ttl_s,
        )
        self._publish = publish
        self._tenants = tenants
        self._ingesting = asyncio.Semaphore(settings.max_concurrent_ingests)
        self._chunking = f"{settings.chunk_words}/{settings.chunk_overlap_words}"

    # ---- writes ----

    async def upsert(self, tenant_id: str, document: KnowledgeDocument) -> UpsertOutcome:
        """Store (or replace) a document; DocumentError for bad input, nothing written."""
        settings = self._settings
        content_type = validate(document, settings)
        fp = fingerprint(document, content_type, self._embedder.name, self._chunking)
        existing = await self._store.get(tenant_id, document.document_id)
        if existing is not None and existing.state == LIVE and existing.fingerprint == fp:
            INGESTED.labels("unchanged").inc()
            return UpsertOutcome(document.document_id, existing.version, existing.chunks, True, ())
        tenant = await self._tenants(tenant_id)
        async with self._ingesting:
            # Extraction, redaction and chunking are CPU work: off the event loop.
            sections, redacted = await asyncio.to_thread(
                self._prepare, document, content_type, tenant
            )
            chunks = chunk_sections(sections, settings.chunk_words, settings.chunk_overlap_words)
            if len(chunks) > settings.max_chunks_per_document:
                raise DocumentError(
                    f"the document splits into {len(chunks)} chunks, more than the limit of "
                    f"{settings.max_chunks_per_document}"
                )
            title = document.title or document.document_id
            vectors = await self._embedder.embed(
                [_embedding_text(title, c.heading, c.text) for c in chunks]
            )
        stored = [
            StoredChunk(
                f"{document.document_id}#{c.ordinal}", c.ordinal, c.heading, c.text, vector_bytes(v)
            )
            for c, v in zip(chunks, vectors, strict=True)
        ]
        version = await self._store.reserve_version(tenant_id, document.document_id)
        try:
            await self._store.write_chunks(tenant_id, document.document_id, version, stored)
            won = await self._store.publish_version(
                tenant_id,
                document.document_id,
                version,
                {
                    "state": LIVE,
                    "title": title,
                    "source_url": document.source_url,
                    "content_type": content_type,
                    "metadata": dict(document.metadata),
                    "fingerprint": fp,
                    "embedding_model": self._embedder.name,
                    "chunks": len(stored),
                },
            )
        except BaseException:
            # Invisible anyway (the document does not point at it); tidy up if we can.
            await _quietly(self._store.remove_version(tenant_id, document.document_id, version))
            raise
        if not won:
            await self._store.remove_version(tenant_id, document.document_id, version)
            INGESTED.labels("superseded").inc()
            current = await self._store.get(tenant_id, document.document_id)
            return UpsertOutcome(
                document.document_id,
                current.version if current else version,
                current.chunks if current else 0,
                False,
                redacted,
            )
        await self._store.remove_chunks(tenant_id, document.document_id, except_version=version)
        change = KnowledgeChunkChange(
            tenant_id=tenant_id,
            document_id=document.document_id,
            version=version,
            title=title,
            source_url=document.source_url,
            embedding_model=self._embedder.name,
            dimensions=self.replica.index.dimensions,
            chunks=[chunk_message(c) for c in stored],
        )
        # Here first, so that this replica answers with the new chunks at once.
        self.replica.apply(change)
        await self._publish(self._for_topic(change))
        INGESTED.labels("stored").inc()
        return UpsertOutcome(document.document_id, version, len(stored), False, redacted)

    async def delete(self, tenant_id: str, document_id: str) -> None:
        """Remove a document everywhere; DocumentNotFoundError when there is none."""
        existing = await self._store.get(tenant_id, document_id)
        if existing is None or existing.state != LIVE:
            raise DocumentNotFoundError(document_id)
        version = await self._store.reserve_version(tenant_id, document_id)
        await self._store.publish_version(
            tenant_id, document_id, version, {"state": DELETED, "chunks": 0}
        )
        await self._store.remove_chunks(tenant_id, document_id)
        change = KnowledgeChunkChange(
            tenant_id=tenant_id, document_id=document_id, version=version, deleted=True
        )
        self.replica.apply(change)
        await self._publish(change)
        INGESTED.labels("deleted").inc()

    def _prepare(
        self, document: KnowledgeDocument, content_type: str, tenant: TenantConfig | None
    ) -> tuple[list[Section], tuple[str, ...]]:
        sections = extract(content_type, document.content, document.content_bytes)
        policy = tenant.guardrails if tenant is not None else None
        regions = tuple(policy.phone_regions) if policy is not None else ()
        kinds = ALL_KINDS if policy is None or policy.redact_pii else SECRET_KINDS
        redactor = redactor_for(regions or DEFAULT_PHONE_REGIONS)
        found: set[str] = set()
        for section in sections:
            paragraphs = []
            for paragraph in section.paragraphs:
                result = redactor.redact(paragraph, kinds)
                found.update(str(k) for k in result.kinds)
                paragraphs.append(result.text)
            section.paragraphs = paragraphs
        return sections, tuple(sorted(found))

    def _for_topic(self, change: KnowledgeChunkChange) -> KnowledgeChunkChange:
        if change.ByteSize() <= self._settings.max_record_bytes:
            return change
        slim = KnowledgeChunkChange()
        slim.CopyFrom(change)
        del slim.chunks[:]
        slim.chunks_in_store = True
        return slim

    # ---- reads ----

    async def search(
        self,
        tenant_id: str,
        query: str,
        top_k: int,
        given_vector: tuple[str, Sequence[float]] | None = None,
    ) -> list[Hit]:
        """The tenant's passages for `query`; DocumentError for a bad query. `given_vector`
        (model name, vector) is the query's embedding when the caller computed it already;
        it is used when it comes from this service's model, else the query is embedded."""
        settings = self._settings
        if not query.strip():
            raise DocumentError("query is empty")
        if len(query) > settings.max_query_chars:
            raise DocumentError(f"query is longer than {settings.max_query_chars} characters")
        k = top_k or settings.retrieval.default_top_k
        k = min(k, settings.retrieval.max_top_k)
        started = time.perf_counter()
        if self.replica.index.chunk_count(tenant_id) == 0:
            return []
        vector = _usable(given_vector, self._embedder.name, self.replica.index.dimensions)
        QUERY_VECTORS.labels("embedded" if vector is None else "given").inc()
        if vector is None:
            vector = await self._queries.embed(query)
        hits = self.replica.index.search(tenant_id, query, vector, k)
        SEARCH_SECONDS.observe(time.perf_counter() - started)
        return hits

    async def list(
        self, tenant_id: str, page_size: int, page_token: str
    ) -> tuple[list[DocumentRecord], str]:
        """One page of live documents and the token of the next ("" at the end)."""
        settings = self._settings
        size = min(page_size or settings.list_default_page_size, settings.list_max_page_size)
        if page_token and not DOCUMENT_ID.match(page_token):
            raise DocumentError("page_token is not one this service issued")
        records = await self._store.list_live(tenant_id, page_token, size + 1)
        more = len(records) > size
        records = records[:size]
        return records, (records[-1].document_id if more and records else "")


def _embedding_text(title: str, heading: str, text: str) -> str:
    """What is embedded for a chunk: its title and heading path carry much of its topic."""
    head = " - ".join(p for p in (title, heading) if p)
    return f"{head}\n{text}" if head else text


async def _quietly(work: Awaitable[None]) -> None:
    try:
        await work
    except Exception as exc:  # tidying up only; the original error is what matters
        log.warning("could not remove a half-written version: %s", exc)


def _usable(
    given: tuple[str, Sequence[float]] | None, model: str, dimensions: int
) -> Vectors | None:
    """A caller's query vector, unit length, when it is of this model and dimension."""
    if given is None:
        return None
    name, values = given
    if name != model or len(values) != dimensions:
        return None
    vector: Vectors = normalise(np.asarray([values], dtype=np.float32))[0]
    vector.setflags(write=False)
    return vector
