"""`make eval-knowledge`: retrieval quality on a labelled set, in process.

The corpus is tests/data/knowledge_corpus/ (Markdown policies), ingested exactly as the service
does (extraction, chunking, the embedding model, the indexes, fusion and threshold). The
questions are tests/data/knowledge_eval.jsonl: paraphrases with little word overlap, each
labelled with the document and section that answers it, plus off-topic questions that nothing
should answer. `dev` is the split the threshold and weights were tuned on; `heldout` is
reported apart and never tuned on.

Printed per split: recall@1 and recall@3 (the right document among the first 1 / 3 hits), MRR,
section recall@3, the share of answerable questions that found nothing, and the off-topic
false-citation rate (off-topic questions that found at least one passage).
"""

import argparse
import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from switchboard.embeddings import local_embedder
from switchboard.embeddings.local import LocalEmbedder
from switchboard.knowledge.documents import _embedding_text
from switchboard.knowledge.ingest import MARKDOWN, chunk_sections, extract
from switchboard.knowledge.settings import KnowledgeSettings
from switchboard.knowledge_index.index import DocumentChange, Hit, IndexedChunk, KnowledgeIndex
from switchboard.knowledge_index.settings import RetrievalSettings

TENANT = "eval"


@dataclass(frozen=True)
class Case:
    question: str
    document_id: str | None
    section: str | None
    split: str


def load_cases(path: Path) -> list[Case]:
    return [
        Case(r["question"], r["document_id"], r["section"], r["split"])
        for r in map(json.loads, path.read_text().splitlines())
        if r
    ]


def build_index(
    corpus: Path, embedder: LocalEmbedder, settings: KnowledgeSettings
) -> KnowledgeIndex:
    index = KnowledgeIndex(embedder.dimensions, settings.retrieval)
    changes = []
    for file in sorted(corpus.glob("*.md")):
        text = file.read_text()
        title = text.splitlines()[0].lstrip("# ").strip()
        chunks = chunk_sections(
            extract(MARKDOWN, text, b""), settings.chunk_words, settings.chunk_overlap_words
        )
        vectors = embedder.embed_sync([_embedding_text(title, c.heading, c.text) for c in chunks])
        changes.append(
            DocumentChange(
                TENANT,
                file.name,
                1,
                False,
                [
                    IndexedChunk(
                        f"{file.name}#{c.ordinal}", file.name, title, "", c.heading, c.text, v
                    )
                    for c, v in zip(chunks, vectors, strict=True)
                ],
            )
        )
    index.apply_many(changes)
    return index


def score(cases: list[Case], results: list[list[Hit]]) -> dict[str, float]:
    answerable = [(c, r) for c, r in zip(cases, results, strict=True) if c.document_id]
    off = [r for c, r in zip(cases, results, strict=True) if not c.document_id]
    r1 = r3 = mrr = s3 = empty = 0.0
    for case, hits in answerable:
        docs = [h.document_id for h in hits]
        if docs[:1] == [case.document_id]:
            r1 += 1
        if case.document_id in docs[:3]:
            r3 += 1
        if case.document_id in docs:
            mrr += 1.0 / (docs.index(case.document_id) + 1)
        if any(
            h.document_id == case.document_id and h.heading.endswith(case.section or "")
            for h in hits[:3]
        ):
            s3 += 1
        if not hits:
            empty += 1
    n = max(len(answerable), 1)
    return {
        "questions": float(len(answerable)),
        "recall@1": r1 / n,
        "recall@3": r3 / n,
        "mrr": mrr / n,
        "section_recall@3": s3 / n,
        "answerable_found_nothing": empty / n,
        "off_topic": float(len(off)),
        "off_topic_false_citation_rate": sum(1 for r in off if r) / max(len(off), 1),
    }


async def evaluate(
    data: Path, retrieval: RetrievalSettings | None = None
) -> dict[str, dict[str, float]]:
    settings = KnowledgeSettings()
    if retrieval is not None:
        settings.retrieval = retrieval
    embedder = local_embedder()
    index = build_index(data / "knowledge_corpus", embedder, settings)
    cases = load_cases(data / "knowledge_eval.jsonl")
    vectors = embedder.embed_sync([c.question for c in cases])
    results = [
        index.search(TENANT, c.question, v, settings.retrieval.default_top_k)
        for c, v in zip(cases, vectors, strict=True)
    ]
    out = {}
    for split in ("dev", "heldout"):
        picked = [(c, r) for c, r in zip(cases, results, strict=True) if c.split == split]
        out[split] = score([c for c, _ in picked], [r for _, r in picked])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("tests/data"))
    parser.add_argument(
        "--sweep", action="store_true", help="also print dev figures over a range of thresholds"
    )
    args = parser.parse_args()
    figures = asyncio.run(evaluate(args.data))
    print(
        f"{'split':<9}{'n':>4}{'R@1':>7}{'R@3':>7}{'MRR':>7}{'secR@3':>8}{'none':>7}"
        f"{'off-topic FCR':>15}"
    )
    for split, f in figures.items():
        print(
            f"{split:<9}{int(f['questions']):>4}{f['recall@1']:>7.3f}{f['recall@3']:>7.3f}"
            f"{f['mrr']:>7.3f}{f['section_recall@3']:>8.3f}{f['answerable_found_nothing']:>7.3f}"
            f"{f['off_topic_false_citation_rate']:>10.3f} (of {int(f['off_topic'])})"
        )
    if args.sweep:
        print("\ndev split by min_similarity:")
        for threshold in (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4):
            tuned = RetrievalSettings(min_similarity=threshold)
            dev = asyncio.run(evaluate(args.data, tuned))["dev"]
            print(
                f"  {threshold:.2f}: R@3 {dev['recall@3']:.3f}"
                f"  none {dev['answerable_found_nothing']:.3f}"
                f"  off-topic FCR {dev['off_topic_false_citation_rate']:.3f}"
            )


if __name__ == "__main__":
    main()
