"""Knowledge service settings (`SWITCHBOARD_KNOWLEDGE_*`)."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from switchboard.common.settings import HealthSettings, KafkaSettings, TelemetrySettings
from switchboard.embeddings import EmbeddingSettings
from switchboard.knowledge_index.settings import RetrievalSettings


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
