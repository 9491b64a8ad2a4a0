"""One replica of every tenant's indexes: filled from MongoDB at start, then kept current by
the changes on `knowledge.chunks` (see `sync`). Changes carry whole documents and versions,
so replicas converge whatever order or how often the changes arrive."""

import logging

import numpy as np
from numpy.typing import NDArray

from switchboard.knowledge_index.index import DocumentChange, IndexedChunk, KnowledgeIndex
from switchboard.knowledge_index.metrics import CHANGES, CHUNKS
from switchboard.knowledge_index.store import LIVE, DocumentRecord, KnowledgeStore, StoredChunk
from switchboard.v1.knowledge_pb2 import KnowledgeChunk, KnowledgeChunkChange

log = logging.getLogger(__name__)


def vector_bytes(vector: NDArray[np.float32]) -> bytes:
    """float32 little-endian bytes of a vector."""
    return np.asarray(vector, dtype="<f4").tobytes()


def vector_of(data: bytes, dimensions: int) -> NDArray[np.float32]:
    """A vector from its bytes; ValueError when the length is wrong."""
    vector = np.frombuffer(data, dtype="<f4").astype(np.float32)
    if vector.shape != (dimensions,):
        raise ValueError(f"a vector of {vector.size} floats, expected {dimensions}")
    return vector


def chunk_message(chunk: StoredChunk) -> KnowledgeChunk:
    """A stored chunk as `knowledge.chunks` carries it."""
    return KnowledgeChunk(
        chunk_id=chunk.chunk_id,
        ordinal=chunk.ordinal,
        text=chunk.text,
        heading=chunk.heading,
        vector=chunk.vector,
    )


class IndexReplica:
    """The indexes of this process, and how they follow MongoDB and `knowledge.chunks`.

    `embedding_model` is the model whose vectors this replica searches with: chunks embedded
    by another model are left out (their vectors would not compare).
    """

    def __init__(self, store: KnowledgeStore, index: KnowledgeIndex, embedding_model: str) -> None:
        self.store = store
        self.index = index
        self.embedding_model = embedding_model

    async def load(self) -> int:
        """Fill the indexes from MongoDB; returns the number of chunks loaded."""
        versions: dict[tuple[str, str], DocumentRecord] = {}
        async for record in self.store.all_documents():
            versions[(record.tenant_id, record.document_id)] = record
        grouped: dict[tuple[str, str], list[StoredChunk]] = {}
        skipped = 0
        async for tenant_id, document_id, version, chunk in self.store.all_chunks():
            held = versions.get((tenant_id, document_id))
            if held is None or held.state != LIVE or held.version != version:
                continue
            if held.embedding_model != self.embedding_model:
                skipped += 1
                continue
            grouped.setdefault((tenant_id, document_id), []).append(chunk)
        changes = []
        for (tenant_id, document_id), record in versions.items():
            chunks = sorted(grouped.get((tenant_id, document_id), []), key=lambda c: c.ordinal)
            changes.append(
                DocumentChange(
                    tenant_id,
                    document_id,
                    record.version,
                    record.state != LIVE,
                    [self._indexed(record.title, record.source_url, c) for c in chunks],
                )
            )
        self.index.apply_many(changes)
        if skipped:
            log.warning(
                "%d chunks were embedded by another model than %s and are not searchable: "
                "upsert their documents again",
                skipped,
                self.embedding_model,
            )
        CHUNKS.set(self.index.chunk_count())
        return self.index.chunk_count()

    async def apply_change(self, change: KnowledgeChunkChange) -> bool:
        """Apply a change from `knowledge.chunks`; False when stale or not applicable."""
        held = self.index.version_of(change.tenant_id, change.document_id)
        if held is not None and change.version <= held:
            CHANGES.labels("stale").inc()
            return False
        if not change.deleted and change.embedding_model != self.embedding_model:
            CHANGES.labels("other_model").inc()
            log.warning(
                "change of %s/%s embedded by %s, not %s: ignored",
                change.tenant_id,
                change.document_id,
                change.embedding_model,
                self.embedding_model,
            )
            return False
        if change.chunks_in_store:
            # Too large for a record: the chunks are read from the source of truth.
            stored = await self.store.chunks_of(
                change.tenant_id, change.document_id, change.version
            )
            full = KnowledgeChunkChange()
            full.CopyFrom(change)
            full.chunks_in_store = False
            full.chunks.extend(chunk_message(c) for c in stored)
            change = full
        applied = self.apply(change)
        CHANGES.labels("applied" if applied else "stale").inc()
        return applied

    def apply(self, change: KnowledgeChunkChange) -> bool:
        """Apply a change that carries its chunks; False when it is not newer."""
        applied = self.index.apply(
            DocumentChange(
                change.tenant_id,
                change.document_id,
                change.version,
                change.deleted,
                [
                    IndexedChunk(
                        chunk_id=c.chunk_id,
                        document_id=change.document_id,
                        title=change.title,
                        source_url=change.source_url,
                        heading=c.heading,
                        text=c.text,
                        vector=vector_of(c.vector, self.index.dimensions),
                    )
                    for c in change.chunks
                ],
            )
        )
        CHUNKS.set(self.index.chunk_count())
        return applied

    def _indexed(self, title: str, source_url: str, chunk: StoredChunk) -> IndexedChunk:
        return IndexedChunk(
            chunk_id=chunk.chunk_id,
            document_id=chunk.chunk_id.rsplit("#", 1)[0],
            title=title,
            source_url=source_url,
            heading=chunk.heading,
            text=chunk.text,
            vector=vector_of(chunk.vector, self.index.dimensions),
        )
