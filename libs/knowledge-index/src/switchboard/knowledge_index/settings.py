"""How a search ranks and cuts (`SWITCHBOARD_KNOWLEDGE_RETRIEVAL_*`): one set of variables,
read alike by every replica of the indexes."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RetrievalSettings(BaseSettings):
    """How a search ranks and cuts (`SWITCHBOARD_KNOWLEDGE_RETRIEVAL_*`)."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_KNOWLEDGE_RETRIEVAL_")

    default_top_k: int = Field(default=3, gt=0, description="Hits when a search asks for 0.")
    max_top_k: int = Field(default=20, gt=0, description="Most hits one search returns.")
    candidates: int = Field(
        default=30, gt=0, description="Candidates taken from each of the dense and lexical lists."
    )
    rrf_k: float = Field(
        default=60.0, gt=0, description="Reciprocal rank fusion constant: 1 / (k + rank)."
    )
    dense_weight: float = Field(
        default=1.0, ge=0, description="Weight of the dense (embedding) ranking in the fusion."
    )
    lexical_weight: float = Field(
        default=0.5,
        ge=0,
        description="Weight of the lexical (BM25) ranking in the fusion (tuned on the dev split: "
        "paraphrases share few words with their answers).",
    )
    min_similarity: float = Field(
        default=0.20,
        ge=-1.0,
        le=1.0,
        description="Relevance threshold: a passage whose cosine similarity to the question is "
        "below this is never returned, however it ranks (tuned on the dev split of "
        "tests/data/knowledge_eval.jsonl).",
    )
    snippet_chars: int = Field(default=240, gt=20, description="Longest snippet of a hit.")
    hnsw_connectivity: int = Field(
        default=16, gt=1, description="HNSW graph degree of the vector index (usearch)."
    )
    hnsw_expansion_add: int = Field(
        default=128, gt=0, description="HNSW candidate list while adding vectors."
    )
    hnsw_expansion_search: int = Field(
        default=64, gt=0, description="HNSW candidate list while searching."
    )
    lexical_writer_heap_bytes: int = Field(
        default=50_000_000,
        ge=15_000_000,
        description="Memory of the lexical (Tantivy) index writer before it flushes a segment.",
    )
