"""The replica of the indexes (knowledge service and orchestrator alike) and the orchestrator's
local search, against a real index and an in-memory stand-in for MongoDB."""

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import numpy as np
import pytest

from switchboard.embeddings import QueryEmbeddings, Vectors
from switchboard.knowledge_index.index import KnowledgeIndex
from switchboard.knowledge_index.replica import IndexReplica, vector_bytes
from switchboard.knowledge_index.settings import RetrievalSettings
from switchboard.knowledge_index.store import LIVE, DocumentRecord, StoredChunk
from switchboard.orchestrator.knowledge import KnowledgeClientSettings, LocalRetriever
from switchboard.v1.knowledge_pb2 import KnowledgeChunk, KnowledgeChunkChange

MODEL = "model-a"
RETURNS = np.array([1.0, 0.0, 0.0], dtype=np.float32)
SHIPPING = np.array([0.0, 1.0, 0.0], dtype=np.float32)


class Store:
    """What the replica reads of MongoDB: documents, and the chunks of each version."""

    def __init__(self) -> None:
        self.documents: list[DocumentRecord] = []
        self.chunks: list[tuple[str, str, int, StoredChunk]] = []
        self.closed = False

    async def all_documents(self) -> AsyncIterator[DocumentRecord]:
        for record in self.documents:
            yield record

    async def all_chunks(self) -> AsyncIterator[tuple[str, str, int, StoredChunk]]:
        for row in self.chunks:
            yield row

    async def chunks_of(self, tenant_id: str, document_id: str, version: int) -> list[StoredChunk]:
        return [c for t, d, v, c in self.chunks if (t, d, v) == (tenant_id, document_id, version)]

    async def close(self) -> None:
        self.closed = True


class Embedder:
    """Questions about returns point at RETURNS, anything else at SHIPPING."""

    name, dimensions = MODEL, 3

    def __init__(self) -> None:
        self.calls = 0

    async def embed(self, texts: Sequence[str]) -> Vectors:
        self.calls += 1
        return np.vstack([RETURNS if "return" in t else SHIPPING for t in texts])

    async def close(self) -> None:
        return None


def record(tenant: str, document_id: str, version: int, model: str = MODEL) -> DocumentRecord:
    return DocumentRecord(
        tenant_id=tenant,
        document_id=document_id,
        version=version,
        state=LIVE,
        title=f"{document_id} policy",
        source_url=f"https://example.com/{document_id}",
        content_type="text/markdown",
        metadata={},
        fingerprint="",
        embedding_model=model,
        chunks=1,
        updated_at=datetime.now(UTC),
    )


def chunk(document_id: str, text: str, vector: np.ndarray) -> StoredChunk:
    return StoredChunk(f"{document_id}#0", 0, "", text, vector_bytes(vector))


def change(
    tenant: str, document_id: str, version: int, text: str, vector: np.ndarray
) -> KnowledgeChunkChange:
    return KnowledgeChunkChange(
        tenant_id=tenant,
        document_id=document_id,
        version=version,
        title=f"{document_id} policy",
        embedding_model=MODEL,
        dimensions=3,
        chunks=[
            KnowledgeChunk(chunk_id=f"{document_id}#0", text=text, vector=vector_bytes(vector))
        ],
    )


def replica_of(store: Store) -> IndexReplica:
    index = KnowledgeIndex(3, RetrievalSettings(min_similarity=0.5))
    return IndexReplica(store, index, MODEL)  # type: ignore[arg-type]


async def test_load_takes_each_documents_current_version_and_its_models_chunks_only() -> None:
    store = Store()
    store.documents = [record("acme", "returns", 2), record("acme", "old-model", 1, "model-b")]
    store.chunks = [
        ("acme", "returns", 1, chunk("returns", "Returns took 14 days once.", RETURNS)),
        ("acme", "returns", 2, chunk("returns", "Returns are accepted for 30 days.", RETURNS)),
        ("acme", "old-model", 1, chunk("old-model", "Shipping takes 3 days.", SHIPPING)),
    ]
    replica = replica_of(store)
    assert await replica.load() == 1
    hits = replica.index.search("acme", "returns", RETURNS, 3)
    assert [h.text for h in hits] == ["Returns are accepted for 30 days."]


async def test_changes_apply_by_version_and_large_ones_are_read_from_the_store() -> None:
    store = Store()
    replica = replica_of(store)
    assert await replica.apply_change(change("acme", "returns", 3, "30 days.", RETURNS))
    # Older or equal versions change nothing, whatever order they arrive in.
    assert not await replica.apply_change(change("acme", "returns", 2, "14 days.", RETURNS))
    assert not await replica.apply_change(change("acme", "returns", 3, "14 days.", RETURNS))
    other = change("acme", "shipping", 1, "Three days.", SHIPPING)
    other.embedding_model = "model-b"
    assert not await replica.apply_change(other)
    slim = KnowledgeChunkChange(
        tenant_id="acme",
        document_id="returns",
        version=4,
        title="returns policy",
        embedding_model=MODEL,
        chunks_in_store=True,
    )
    store.chunks = [("acme", "returns", 4, chunk("returns", "60 days now.", RETURNS))]
    assert await replica.apply_change(slim)
    assert [h.text for h in replica.index.search("acme", "x", RETURNS, 3)] == ["60 days now."]
    deleted = KnowledgeChunkChange(tenant_id="acme", document_id="returns", version=5, deleted=True)
    assert await replica.apply_change(deleted)
    assert replica.index.search("acme", "x", RETURNS, 3) == []


async def test_the_local_search_finds_the_tenants_passages_and_no_other_tenants() -> None:
    replica = replica_of(Store())
    replica.apply(change("acme", "returns", 1, "Returns are accepted for 30 days.", RETURNS))
    replica.apply(change("other", "returns", 1, "Other's returns: 7 days.", RETURNS))
    embedder = Embedder()
    retriever = LocalRetriever(
        KnowledgeClientSettings(), replica, QueryEmbeddings(embedder, max_entries=4, ttl_s=60)
    )
    passages = await retriever.retrieve("acme", "how do returns work?")
    assert [(p.ref, p.document_id, p.text) for p in passages] == [
        ("K1", "returns", "Returns are accepted for 30 days.")
    ]
    assert passages[0].title == "returns policy"
    # Off-topic: below the relevance threshold, nothing.
    assert await retriever.retrieve("acme", "where is my parcel?") == []
    # A tenant without documents costs no embedding.
    calls = embedder.calls
    assert await retriever.retrieve("nobody", "how do returns work?") == []
    assert embedder.calls == calls
    await retriever.close()
    assert replica.store.closed  # type: ignore[attr-defined]


async def test_a_failed_query_embedding_gives_no_passages_not_an_error() -> None:
    from switchboard.embeddings import EmbeddingError

    class Broken(Embedder):
        async def embed(self, texts: Sequence[str]) -> Vectors:
            raise EmbeddingError("the endpoint is down")

    replica = replica_of(Store())
    replica.apply(change("acme", "returns", 1, "Returns are accepted for 30 days.", RETURNS))
    retriever = LocalRetriever(
        KnowledgeClientSettings(), replica, QueryEmbeddings(Broken(), max_entries=4, ttl_s=60)
    )
    assert await retriever.retrieve("acme", "how do returns work?") == []


@pytest.mark.parametrize("search", ["local", "service"])
def test_the_search_setting_is_read_from_the_environment(
    search: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWITCHBOARD_ORCHESTRATOR_KNOWLEDGE_SEARCH", search)
    monkeypatch.setenv("SWITCHBOARD_KNOWLEDGE_RETRIEVAL_MIN_SIMILARITY", "0.3")
    settings = KnowledgeClientSettings()
    assert settings.search == search
    assert settings.retrieval.min_similarity == 0.3
