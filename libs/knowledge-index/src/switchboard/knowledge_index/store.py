"""MongoDB, the source of truth: `knowledge_documents` (one per tenant and document id, with
its current version) and `knowledge_chunks` (the chunks of each version, with vectors).

A change never leaves a half-written document behind, without multi-document transactions
(FerretDB has none): the new version's chunks are written first, then the document is
pointed at that version in one conditional update, then the older chunks are removed.
Readers take only the chunks of the version a document points at, so a write that died
half-way is invisible, and its chunks are removed by the next change of that document.
"""

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, AsyncMongoClient, ReturnDocument

DOCUMENTS = "knowledge_documents"
CHUNKS = "knowledge_chunks"
LIVE = "live"
DELETED = "deleted"


def document_key(tenant_id: str, document_id: str) -> str:
    """The `_id` of a document (tenant ids cannot contain ':')."""
    return f"{tenant_id}:{document_id}"


@dataclass(frozen=True)
class StoredChunk:
    """A chunk as stored."""

    chunk_id: str
    ordinal: int
    heading: str
    text: str
    vector: bytes


@dataclass(frozen=True)
class DocumentRecord:
    """A document's stored description (without its chunks)."""

    tenant_id: str
    document_id: str
    title: str
    source_url: str
    content_type: str
    metadata: dict[str, str]
    fingerprint: str
    embedding_model: str
    version: int
    chunks: int
    state: str
    updated_at: datetime


def _record(raw: Mapping[str, Any]) -> DocumentRecord:
    updated = raw.get("updated_at") or datetime.fromtimestamp(0, UTC)
    if updated.tzinfo is None:
        updated = updated.replace(tzinfo=UTC)
    return DocumentRecord(
        tenant_id=raw["tenant_id"],
        document_id=raw["document_id"],
        title=raw.get("title", ""),
        source_url=raw.get("source_url", ""),
        content_type=raw.get("content_type", ""),
        metadata=dict(raw.get("metadata") or {}),
        fingerprint=raw.get("fingerprint", ""),
        embedding_model=raw.get("embedding_model", ""),
        version=int(raw.get("version", 0)),
        chunks=int(raw.get("chunks", 0)),
        state=raw.get("state", ""),
        updated_at=updated,
    )


class KnowledgeStore:
    """Documents and chunks of every tenant; every call is scoped by tenant."""

    def __init__(self, mongo_url: str, database: str, timeout_ms: int) -> None:
        self.client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            mongo_url,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            socketTimeoutMS=timeout_ms,
            tz_aware=True,
        )
        db = self.client[database]
        self._documents = db[DOCUMENTS]
        self._chunks = db[CHUNKS]

    async def ensure_indexes(self) -> None:
        await self._documents.create_index(
            [("tenant_id", ASCENDING), ("state", ASCENDING), ("document_id", ASCENDING)]
        )
        await self._chunks.create_index(
            [("tenant_id", ASCENDING), ("document_id", ASCENDING), ("version", ASCENDING)]
        )

    async def close(self) -> None:
        await self.client.close()

    async def get(self, tenant_id: str, document_id: str) -> DocumentRecord | None:
        """The document's record (also a deleted one), or None."""
        raw = await self._documents.find_one({"_id": document_key(tenant_id, document_id)})
        return None if raw is None or "tenant_id" not in raw else _record(raw)

    async def reserve_version(self, tenant_id: str, document_id: str) -> int:
        """A version number no other change of this document has or will have."""
        raw = await self._documents.find_one_and_update(
            {"_id": document_key(tenant_id, document_id)},
            {"$inc": {"next_version": 1}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        assert raw is not None
        return int(raw["next_version"])

    async def write_chunks(
        self,
        tenant_id: str,
        document_id: str,
        version: int,
        chunks: Sequence[StoredChunk],
    ) -> None:
        """Store the chunks of a version (not yet visible: the document points elsewhere)."""
        if not chunks:
            return
        await self._chunks.insert_many(
            [
                {
                    "_id": f"{document_key(tenant_id, document_id)}:{version}:{c.ordinal}",
                    "tenant_id": tenant_id,
                    "document_id": document_id,
                    "version": version,
                    "ordinal": c.ordinal,
                    "chunk_id": c.chunk_id,
                    "heading": c.heading,
                    "text": c.text,
                    "vector": c.vector,
                }
                for c in chunks
            ],
            ordered=False,
        )

    async def publish_version(
        self,
        tenant_id: str,
        document_id: str,
        version: int,
        fields: Mapping[str, Any],
    ) -> bool:
        """Point the document at `version` (live, or deleted) with `fields`; False when a
        newer version got there first (then this one must be dropped)."""
        result = await self._documents.update_one(
            {
                "_id": document_key(tenant_id, document_id),
                "$or": [{"version": {"$lt": version}}, {"version": {"$exists": False}}],
            },
            {
                "$set": {
                    **fields,
                    "tenant_id": tenant_id,
                    "document_id": document_id,
                    "version": version,
                    "updated_at": datetime.now(UTC),
                }
            },
        )
        return result.modified_count == 1

    async def remove_chunks(
        self, tenant_id: str, document_id: str, *, except_version: int | None = None
    ) -> int:
        """Remove the document's chunks (all, or all but one version's)."""
        query: dict[str, Any] = {"tenant_id": tenant_id, "document_id": document_id}
        if except_version is not None:
            query["version"] = {"$ne": except_version}
        result = await self._chunks.delete_many(query)
        return int(result.deleted_count)

    async def remove_version(self, tenant_id: str, document_id: str, version: int) -> None:
        """Remove one version's chunks (a write that lost, or failed half-way)."""
        await self._chunks.delete_many(
            {"tenant_id": tenant_id, "document_id": document_id, "version": version}
        )

    async def chunks_of(self, tenant_id: str, document_id: str, version: int) -> list[StoredChunk]:
        """The chunks of one version, in order."""
        cursor = self._chunks.find(
            {"tenant_id": tenant_id, "document_id": document_id, "version": version}
        ).sort("ordinal", ASCENDING)
        return [
            StoredChunk(r["chunk_id"], int(r["ordinal"]), r["heading"], r["text"], r["vector"])
            async for r in cursor
        ]

    async def list_live(self, tenant_id: str, after: str, limit: int) -> list[DocumentRecord]:
        """Live documents of a tenant with ids after `after`, in id order."""
        query: dict[str, Any] = {"tenant_id": tenant_id, "state": LIVE}
        if after:
            query["document_id"] = {"$gt": after}
        cursor = self._documents.find(query).sort("document_id", ASCENDING).limit(limit)
        return [_record(r) async for r in cursor]

    async def all_documents(self) -> AsyncIterator[DocumentRecord]:
        """Every document record (live and deleted), for rebuilding the indexes."""
        async for raw in self._documents.find({"tenant_id": {"$exists": True}}):
            yield _record(raw)

    async def all_chunks(self) -> AsyncIterator[tuple[str, str, int, StoredChunk]]:
        """Every stored chunk with its tenant, document and version."""
        async for r in self._chunks.find({}):
            yield (
                r["tenant_id"],
                r["document_id"],
                int(r["version"]),
                StoredChunk(r["chunk_id"], int(r["ordinal"]), r["heading"], r["text"], r["vector"]),
            )
