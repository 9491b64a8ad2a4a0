"""Orchestrator settings (`SWITCHBOARD_ORCHESTRATOR_*`)."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from switchboard.common.settings import (
    HealthSettings,
    KafkaSettings,
    RedisSettings,
    TelemetrySettings,
)


class OrchestratorSettings(BaseSettings):
    """Everything the orchestrator reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_ORCHESTRATOR_")

    consumer_group: str = "orchestrator"
    memory_target: str = "127.0.0.1:50052"
    memory_timeout_s: float = Field(default=2.0, gt=0)
    context_max_tokens: int = Field(default=4_000, gt=0)
    default_tier: str = "cheap"
    default_max_output_tokens: int = Field(default=512, gt=0)
    system_prompt: str = (
        "You are a helpful, concise customer-support assistant. Answer in the customer's language."
    )
    # How long a turn may wait for its generation before its state is forgotten.
    turn_state_ttl_s: int = Field(default=3_600, gt=0)
    # Retries of a failing step before the message is handed back to Kafka.
    step_attempts: int = Field(default=5, ge=1)
    step_backoff_max_s: float = Field(default=5.0, gt=0)

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
