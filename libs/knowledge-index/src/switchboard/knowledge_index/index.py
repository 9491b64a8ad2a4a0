"""The searchable indexes of one replica: an HNSW vector index per tenant (usearch) and one
lexical BM25 index (Tantivy) with a tenant field, fused by reciprocal rank fusion and cut at
a cosine-similarity threshold.

Both are rebuilt from MongoDB at start and kept current by `apply`, which every replica
calls for every change on `knowledge.chunks`: a change replaces a document's chunks whole
and is applied only when its version is newer than the one held, so replicas converge
whatever order or how often changes arrive. Not thread-safe: one event loop drives it.
"""

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import tantivy
from numpy.typing import NDArray
from usearch.index import Index

from switchboard.knowledge_index.settings import RetrievalSettings

_WORD = re.compile(r"\w+", re.UNICODE)
# Left out of lexical queries: they match nearly every passage, so with rank fusion a
# question's "how do I" would pull unrelated passages up. (The query parser's operators
# are among them.)
_STOPWORDS_TEXT = """
    a about after again all am an and any are as at be been before being both but by can
    could did do does doing down during each few for from further had has have having he her
    here hers him his how i if in into is it its just me more most my no nor not now of off
    on once only or other our ours out over own same she should so some such than that the
    their them then there these they this those through to too under until up very was we
    were what when where which while who whom why will with would you your yours
"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


@dataclass(frozen=True)
class IndexedChunk:
    """A chunk as the indexes hold it."""

    chunk_id: str
    document_id: str
    title: str
    source_url: str
    heading: str
    text: str
    vector: NDArray[np.float32]


@dataclass(frozen=True)
class DocumentChange:
    """The whole state of one document after a change (no chunks: deleted)."""

    tenant_id: str
    document_id: str
    version: int
    deleted: bool
    chunks: Sequence[IndexedChunk]


@dataclass(frozen=True)
class Hit:
    """One search result."""

    document_id: str
    chunk_id: str
    title: str
    source_url: str
    heading: str
    text: str
    snippet: str
    score: float
    similarity: float
    dense_rank: int | None
    lexical_rank: int | None


@dataclass(frozen=True)
class _Entry:
    tenant_id: str
    document_id: str
    chunk_id: str
    title: str
    source_url: str
    heading: str
    text: str


def query_terms(text: str) -> list[str]:
    """Lower-case words of `text`: the query parser sees words only, never its operators."""
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


def snippet_of(text: str, query: str, limit: int) -> str:
    """The sentence(s) of `text` sharing the most words with `query`, cut to `limit`."""
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()] or [text]
    terms = set(query_terms(query))
    best = max(
        range(len(sentences)),
        key=lambda i: (len(terms & set(query_terms(sentences[i]))), -i),
    )
    out = sentences[best]
    for following in sentences[best + 1 :]:
        if len(out) + 1 + len(following) > limit:
            break
        out = f"{out} {following}"
    if len(out) > limit:
        out = out[: limit - 1].rsplit(" ", 1)[0] + "…"
    return out


class _TenantVectors:
    def __init__(self, dimensions: int, settings: RetrievalSettings) -> None:
        self.index = Index(
            ndim=dimensions,
            metric="cos",
            dtype="f32",
            connectivity=settings.hnsw_connectivity,
            expansion_add=settings.hnsw_expansion_add,
            expansion_search=settings.hnsw_expansion_search,
        )


class KnowledgeIndex:
    """Every tenant's chunks on this replica."""

    def __init__(self, dimensions: int, settings: RetrievalSettings) -> None:
        self.dimensions = dimensions
        self._settings = settings
        self._vectors: dict[str, _TenantVectors] = {}
        self._entries: dict[int, _Entry] = {}
        # (tenant, document) -> (version, keys); deleted documents keep their version.
        self._documents: dict[tuple[str, str], tuple[int, list[int]]] = {}
        self._keys = itertools.count(1)
        builder = tantivy.SchemaBuilder()
        builder.add_text_field("text", stored=False, tokenizer_name="en_stem")
        builder.add_text_field("tenant", stored=False, tokenizer_name="raw")
        builder.add_text_field("doc", stored=False, tokenizer_name="raw")
        builder.add_unsigned_field("key", stored=False, indexed=False, fast=True)
        self._schema = builder.build()
        self._lexical = tantivy.Index(self._schema)
        self._writer = self._lexical.writer(
            heap_size=settings.lexical_writer_heap_bytes, num_threads=1
        )

    # ---- changes ----

    def version_of(self, tenant_id: str, document_id: str) -> int | None:
        """The version held for a document (also for a deleted one), or None."""
        held = self._documents.get((tenant_id, document_id))
        return None if held is None else held[0]

    def apply(self, change: DocumentChange) -> bool:
        """Apply one change; False when it is not newer than what is held (nothing done)."""
        applied = self.apply_many([change])
        return applied == 1

    def apply_many(self, changes: Iterable[DocumentChange]) -> int:
        """Apply changes with one commit of the lexical index; returns how many applied."""
        applied = 0
        for change in changes:
            key = (change.tenant_id, change.document_id)
            held = self._documents.get(key)
            if held is not None and change.version <= held[0]:
                continue
            if held is not None and held[1]:
                self._remove(change.tenant_id, change.document_id, held[1])
            keys = [] if change.deleted else self._add(change)
            self._documents[key] = (change.version, keys)
            applied += 1
        if applied:
            self._writer.commit()
            self._lexical.reload()
        return applied

    def _remove(self, tenant_id: str, document_id: str, keys: list[int]) -> None:
        vectors = self._vectors.get(tenant_id)
        if vectors is not None:
            vectors.index.remove(np.asarray(keys, dtype=np.uint64))
        self._writer.delete_documents_by_term("doc", f"{tenant_id}\x1f{document_id}")
        for k in keys:
            self._entries.pop(k, None)

    def _add(self, change: DocumentChange) -> list[int]:
        if not change.chunks:
            return []
        tenant = self._vectors.get(change.tenant_id)
        if tenant is None:
            tenant = self._vectors[change.tenant_id] = _TenantVectors(
                self.dimensions, self._settings
            )
        keys = [next(self._keys) for _ in change.chunks]
        matrix = np.vstack([c.vector for c in change.chunks]).astype(np.float32)
        if matrix.shape[1] != self.dimensions:
            raise ValueError(f"vectors have {matrix.shape[1]} dimensions, not {self.dimensions}")
        tenant.index.add(np.asarray(keys, dtype=np.uint64), matrix)
        doc_term = f"{change.tenant_id}\x1f{change.document_id}"
        for k, chunk in zip(keys, change.chunks, strict=True):
            self._entries[k] = _Entry(
                change.tenant_id,
                change.document_id,
                chunk.chunk_id,
                chunk.title,
                chunk.source_url,
                chunk.heading,
                chunk.text,
            )
            document = tantivy.Document()
            document.add_text("text", f"{chunk.title}\n{chunk.heading}\n{chunk.text}")
            document.add_text("tenant", change.tenant_id)
            document.add_text("doc", doc_term)
            document.add_unsigned("key", k)
            self._writer.add_document(document)
        return keys

    # ---- queries ----

    def chunk_count(self, tenant_id: str | None = None) -> int:
        """Chunks held (for one tenant, or all)."""
        if tenant_id is None:
            return len(self._entries)
        vectors = self._vectors.get(tenant_id)
        return 0 if vectors is None else len(vectors.index)

    def search(
        self, tenant_id: str, query: str, vector: NDArray[np.float32], top_k: int
    ) -> list[Hit]:
        """The best `top_k` passages of the tenant for `query`, none below the threshold."""
        settings = self._settings
        vectors = self._vectors.get(tenant_id)
        if vectors is None or len(vectors.index) == 0:
            return []
        n = settings.candidates
        dense_keys: list[int] = []
        similarity: dict[int, float] = {}
        matches = vectors.index.search(vector, min(n, len(vectors.index)))
        for key, distance in zip(matches.keys.tolist(), matches.distances.tolist(), strict=True):
            dense_keys.append(int(key))
            similarity[int(key)] = 1.0 - float(distance)
        lexical_keys = self._lexical_search(tenant_id, query, n)
        fused: dict[int, float] = {}
        dense_rank: dict[int, int] = {}
        lexical_rank: dict[int, int] = {}
        for rank, key in enumerate(dense_keys, start=1):
            fused[key] = fused.get(key, 0.0) + settings.dense_weight / (settings.rrf_k + rank)
            dense_rank[key] = rank
        for rank, key in enumerate(lexical_keys, start=1):
            fused[key] = fused.get(key, 0.0) + settings.lexical_weight / (settings.rrf_k + rank)
            lexical_rank[key] = rank
        missing = [k for k in fused if k not in similarity and k in self._entries]
        if missing:
            stored = vectors.index.get(np.asarray(missing, dtype=np.uint64))
            rows = np.atleast_2d(np.asarray(stored, dtype=np.float32))
            for key, row in zip(missing, rows, strict=True):
                similarity[key] = float(np.dot(row, vector))
        kept = [
            k
            for k in fused
            if k in self._entries and similarity.get(k, -1.0) >= settings.min_similarity
        ]
        kept.sort(key=lambda k: (-fused[k], -similarity[k]))
        hits = []
        for key in kept[:top_k]:
            entry = self._entries[key]
            hits.append(
                Hit(
                    document_id=entry.document_id,
                    chunk_id=entry.chunk_id,
                    title=entry.title,
                    source_url=entry.source_url,
                    heading=entry.heading,
                    text=entry.text,
                    snippet=snippet_of(entry.text, query, settings.snippet_chars),
                    score=fused[key],
                    similarity=similarity[key],
                    dense_rank=dense_rank.get(key),
                    lexical_rank=lexical_rank.get(key),
                )
            )
        return hits

    def _lexical_search(self, tenant_id: str, query: str, limit: int) -> list[int]:
        terms = query_terms(query)
        if not terms:
            return []
        text_query, _errors = self._lexical.parse_query_lenient(" ".join(terms), ["text"])
        tenant_query = tantivy.Query.term_query(self._schema, "tenant", tenant_id)
        combined = tantivy.Query.boolean_query(
            [(tantivy.Occur.Must, tenant_query), (tantivy.Occur.Must, text_query)]
        )
        searcher = self._lexical.searcher()
        result = searcher.search(combined, limit)
        addresses = [address for _score, address in result.hits]
        if not addresses:
            return []
        return [int(k or 0) for k in searcher.fast_field_values("key", addresses)]
