"""Memory service settings (`SWITCHBOARD_MEMORY_*`)."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from switchboard.common.settings import HealthSettings, KafkaSettings, TelemetrySettings


class MemorySettings(BaseSettings):
    """Everything the memory service reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_MEMORY_")

    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=50052, ge=0, le=65535)
    mongo_url: str = "mongodb://127.0.0.1:27017/"
    database: str = "switchboard"
    mongo_timeout_ms: int = Field(default=5_000, gt=0)
    consumer_group: str = "memory"
    default_context_tokens: int = Field(default=4_000, gt=0)
    # Newest messages read to fill a context window; older ones belong in the summary.
    context_scan_limit: int = Field(default=200, gt=0)
    # Retries of a failed write before the record is handed back to Kafka to try again.
    write_attempts: int = Field(default=5, ge=1)
    write_backoff_max_s: float = Field(default=5.0, gt=0)
    shutdown_grace_s: float = Field(default=5.0, ge=0)

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
