"""Knowledge service settings (`SWITCHBOARD_KNOWLEDGE_*`)."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from switchboard.common.settings import HealthSettings, KafkaSettings, TelemetrySettings
from switchboard.embeddings import EmbeddingSettings


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


class KnowledgeSettings(BaseSettings):
    """Everything the knowledge service reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_KNOWLEDGE_")

    grpc_host: str = Field(default="127.0.0.1", description="gRPC listen address.")
    grpc_port: int = Field(default=15053, ge=0, le=65535, description="gRPC listen port.")
    mongo_url: str = Field(default="mongodb://127.0.0.1:27017/", description="MongoDB URL.")
    database: str = Field(default="switchboard", description="MongoDB database.")
    mongo_timeout_ms: int = Field(
        default=5_000, gt=0, description="Bounds server selection, connecting and each read."
    )
    write_attempts: int = Field(
        default=3, ge=1, description="Attempts of a MongoDB write before the call fails."
    )
    write_backoff_max_s: float = Field(
        default=2.0, gt=0, description="Longest backoff between two write attempts."
    )
    shutdown_grace_s: float = Field(
        default=5.0, ge=0, description="How long open calls may finish on SIGTERM."
    )
    max_document_bytes: int = Field(
        default=5_000_000, gt=0, description="Largest document accepted (content or bytes)."
    )
    max_chunks_per_document: int = Field(
        default=2_000, gt=0, description="A document that splits into more is refused."
    )
    max_title_chars: int = Field(default=300, gt=0, description="Longest title.")
    max_query_chars: int = Field(default=2_000, gt=0, description="Longest search query.")
    chunk_words: int = Field(
        default=120,
        gt=10,
        description="Words per chunk at most (plus the overlap); the embedding model reads "
        "256 word pieces, about 180 words.",
    )
    chunk_overlap_words: int = Field(
        default=25, ge=0, description="Words a chunk repeats from the end of the one before."
    )
    list_default_page_size: int = Field(default=50, gt=0, description="ListDocuments default.")
    list_max_page_size: int = Field(default=500, gt=0, description="ListDocuments maximum.")
    max_record_bytes: int = Field(
        default=900_000,
        gt=0,
        description="A chunk change larger than this goes to Kafka without its chunks (each "
        "replica reads them from MongoDB); keep it below the broker's message size limit.",
    )
    sync_poll_timeout_ms: int = Field(
        default=500, gt=0, description="Longest wait of one poll of the knowledge.chunks topic."
    )
    max_concurrent_ingests: int = Field(
        default=2, gt=0, description="Upserts embedded at once; more wait their turn."
    )

    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    embeddings: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
