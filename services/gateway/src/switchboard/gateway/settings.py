"""Gateway settings (`SWITCHBOARD_GATEWAY_*`)."""

import os
import socket
import uuid

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from switchboard.common.settings import (
    HealthSettings,
    KafkaSettings,
    RedisSettings,
    TelemetrySettings,
)


def _default_instance_id() -> str:
    # Unique per process so two replicas on one host never share a reply topic.
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}".lower()


class DevKeySettings(BaseSettings):
    """The local demo tenant's API key (`SWITCHBOARD_DEV_API_KEY`)."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_DEV_")

    api_key: SecretStr = SecretStr("sb-dev-key")
    tenant_id: str = "demo"


class MemoryClientSettings(BaseSettings):
    """Where the conversation methods find the memory service (`SWITCHBOARD_GATEWAY_MEMORY_*`)."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_GATEWAY_MEMORY_")

    target: str = "127.0.0.1:50052"
    # Above the memory service's own wait for a rating's turn (3 s by default).
    timeout_s: float = Field(default=10.0, gt=0)


class GatewaySettings(BaseSettings):
    """Everything the gateway reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_GATEWAY_")

    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    instance_id: str = Field(default_factory=_default_instance_id, pattern=r"^[a-z0-9._-]+$")
    reply_topic_partitions: int = Field(default=1, ge=1, le=64)
    max_message_chars: int = Field(default=8_000, gt=0)
    max_user_id_chars: int = Field(default=256, gt=0)
    max_metadata_entries: int = Field(default=32, ge=0)
    max_output_tokens_limit: int = Field(default=16_384, gt=0)
    # Events buffered per open stream; a client slower than this is cut off.
    stream_buffer_events: int = Field(default=1_024, gt=0)
    # Longest silence between two events of a reply before the client gets an error.
    reply_idle_timeout_s: float = Field(default=120.0, gt=0)
    publish_timeout_s: float = Field(default=10.0, gt=0)
    # A conversation lock outlives a crashed gateway by at most this long.
    conversation_lock_ttl_s: float = Field(default=300.0, gt=0)
    shutdown_grace_s: float = Field(default=10.0, ge=0)

    dev: DevKeySettings = Field(default_factory=DevKeySettings)
    memory: MemoryClientSettings = Field(default_factory=MemoryClientSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
