"""`make bench-knowledge`: retrieval latency at 10,000 and 100,000 chunks, query embedding
latency, and ingestion throughput, on this machine's CPU.

Search: one tenant holding all N chunks (the worst case for one query), random unit vectors
of the model's dimension and texts drawn from a 5,000-word vocabulary; the time measured is
`KnowledgeIndex.search` (HNSW search, Tantivy BM25 search, fusion, threshold, snippets). The
query embedding is measured apart (the all-MiniLM-L6-v2 forward pass; repeated questions are
served from the query cache). Ingestion: extraction, chunking, embedding and indexing of real
policy text, in chunks per second.
"""

import argparse
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from switchboard.embeddings import local_embedder
from switchboard.embeddings.local import LocalEmbedder
from switchboard.knowledge.documents import _embedding_text
from switchboard.knowledge.ingest import MARKDOWN, chunk_sections, extract
from switchboard.knowledge.settings import KnowledgeSettings
from switchboard.knowledge_index.index import DocumentChange, IndexedChunk, KnowledgeIndex
from switchboard.knowledge_index.settings import RetrievalSettings

DIMENSIONS = 384
CHUNKS_PER_DOCUMENT = 20


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def search_latency(size: int, queries: int, seed: int) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, build s) of searches over `size` chunks."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(5_000)]
    pick = random.Random(seed)
    index = KnowledgeIndex(DIMENSIONS, RetrievalSettings(min_similarity=-1.0))
    started = time.perf_counter()
    changes = []
    for d in range(size // CHUNKS_PER_DOCUMENT):
        vectors = rng.standard_normal((CHUNKS_PER_DOCUMENT, DIMENSIONS)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        changes.append(
            DocumentChange(
                "bench",
                f"doc-{d}",
                1,
                False,
                [
                    IndexedChunk(
                        f"doc-{d}#{c}",
                        f"doc-{d}",
                        f"Document {d}",
                        "",
                        "",
                        " ".join(pick.choices(words, k=80)),
                        vectors[c],
                    )
                    for c in range(CHUNKS_PER_DOCUMENT)
                ],
            )
        )
        if len(changes) == 500:
            index.apply_many(changes)
            changes = []
    index.apply_many(changes)
    build_s = time.perf_counter() - started
    latencies = []
    for _ in range(queries):
        vector = rng.standard_normal(DIMENSIONS).astype(np.float32)
        vector /= np.linalg.norm(vector)
        text = " ".join(pick.choices(words, k=6))
        t = time.perf_counter()
        index.search("bench", text, vector, 3)
        latencies.append((time.perf_counter() - t) * 1e3)
    return percentile(latencies, 0.5), percentile(latencies, 0.99), build_s


def embedding_latency(embedder: LocalEmbedder, queries: int) -> tuple[float, float]:
    latencies = []
    for i in range(queries):
        t = time.perf_counter()
        embedder.embed_sync([f"How long do I have to return order number {i} for a refund?"])
        latencies.append((time.perf_counter() - t) * 1e3)
    return percentile(latencies, 0.5), percentile(latencies, 0.99)


def ingestion_rate(embedder: LocalEmbedder, corpus: Path, rounds: int) -> tuple[float, int]:
    settings = KnowledgeSettings()
    files = sorted(corpus.glob("*.md"))
    index = KnowledgeIndex(embedder.dimensions, settings.retrieval)
    chunks_done = 0
    started = time.perf_counter()
    for r in range(rounds):
        for file in files:
            text = file.read_text()
            chunks = chunk_sections(
                extract(MARKDOWN, text, b""), settings.chunk_words, settings.chunk_overlap_words
            )
            vectors = embedder.embed_sync(
                [_embedding_text(file.stem, c.heading, c.text) for c in chunks]
            )
            index.apply(
                DocumentChange(
                    "bench",
                    f"{r}-{file.name}",
                    1,
                    False,
                    [
                        IndexedChunk(
                            f"{file.name}#{c.ordinal}",
                            file.name,
                            file.stem,
                            "",
                            c.heading,
                            c.text,
                            v,
                        )
                        for c, v in zip(chunks, vectors, strict=True)
                    ],
                )
            )
            chunks_done += len(chunks)
    return chunks_done / (time.perf_counter() - started), chunks_done


def measure(sizes: Sequence[int], queries: int, corpus: Path, ingest_rounds: int) -> dict[str, Any]:
    """Every figure of this benchmark, as `make bench` also reports them (in ms, chunks/s)."""
    embedder = local_embedder()
    embedder.embed_sync(["warm up"])
    p50, p99 = embedding_latency(embedder, min(queries, 200))
    rate, chunks = ingestion_rate(embedder, corpus, ingest_rounds)
    search = []
    for size in sizes:
        s50, s99, build_s = search_latency(size, queries, seed=size)
        search.append({"chunks": size, "p50_ms": s50, "p99_ms": s99, "build_s": build_s})
    return {
        "query_embedding_ms": {"p50": p50, "p99": p99},
        "ingestion": {"chunks_per_s": rate, "chunks": chunks},
        "search": search,
    }


def lines(figures: dict[str, Any]) -> list[str]:
    """The report's lines for `figures`."""
    embedding, ingestion = figures["query_embedding_ms"], figures["ingestion"]
    out = [
        f"query embedding (all-MiniLM-L6-v2, 1 BLAS thread): p50 {embedding['p50']:.2f} ms  "
        f"p99 {embedding['p99']:.2f} ms",
        f"ingestion: {ingestion['chunks_per_s']:.1f} chunks/s ({ingestion['chunks']} chunks: "
        "extract, chunk, embed, index)",
    ]
    for row in figures["search"]:
        size, build_s = row["chunks"], row["build_s"]
        out.append(
            f"search over {size:>7,} chunks: p50 {row['p50_ms']:.2f} ms  p99 {row['p99_ms']:.2f} ms"
            f"  (index built in {build_s:.1f} s, {size / build_s:,.0f} chunks/s without embedding)"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000", help="chunk counts, comma separated")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--corpus", type=Path, default=Path("tests/data/knowledge_corpus"))
    parser.add_argument("--ingest-rounds", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    print("\n".join(lines(measure(sizes, args.queries, args.corpus, args.ingest_rounds))))


if __name__ == "__main__":
    main()
