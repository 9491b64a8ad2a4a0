"""Gateway settings (`SWITCHBOARD_GATEWAY_*`)."""

import os
import socket
import uuid
from typing import Self

from pydantic import Field, model_validator
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


class MongoSettings(BaseSettings):
    """Where the tenants live (`SWITCHBOARD_MONGO_*`, as read by the tenant seeding command)."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_MONGO_")

    url: str = Field(default="mongodb://127.0.0.1:27017/", description="MongoDB URL (tenants).")
    database: str = Field(default="switchboard", description="MongoDB database.")
    timeout_ms: int = Field(
        default=2_000,
        gt=0,
        description=(
            "Bounds a tenant lookup when MongoDB is slow or gone: the caller gets UNAVAILABLE."
        ),
    )
    tenant_cache_ttl_s: float = Field(
        default=30.0,
        ge=0,
        description=(
            "Tenants (and unknown keys) are cached this long; a revoked key works at most "
            "this long."
        ),
    )
    tenant_cache_size: int = Field(
        default=1_024, gt=0, description="Tenants (and unknown keys) cached per process."
    )


class MemoryClientSettings(BaseSettings):
    """Where the conversation methods find the memory service (`SWITCHBOARD_GATEWAY_MEMORY_*`)."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_GATEWAY_MEMORY_")

    target: str = Field(
        default="127.0.0.1:15052", description="host:port of the memory service's gRPC endpoint."
    )
    # Above the memory service's own wait for a rating's turn (3 s by default).
    timeout_s: float = Field(
        default=10.0, gt=0, description="Timeout of a call to the memory service, in s."
    )


class GatewaySettings(BaseSettings):
    """Everything the gateway reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_GATEWAY_")

    grpc_host: str = Field(default="127.0.0.1", description="Address the gRPC server listens on.")
    grpc_port: int = Field(
        default=15051, ge=0, le=65535, description="Port the gRPC server listens on."
    )
    instance_id: str = Field(
        default_factory=_default_instance_id,
        pattern=r"^[a-z0-9._-]+$",
        description=(
            "This replica's id; names its reply topic (default: host, pid and a random suffix)."
        ),
    )
    reply_topic_partitions: int = Field(
        default=1, ge=1, le=64, description="Partitions of this replica's reply topic."
    )
    max_message_chars: int = Field(
        default=8_000, gt=0, description="Longest user message accepted, in characters."
    )
    max_user_id_chars: int = Field(
        default=256, gt=0, description="Longest user_id accepted, in characters."
    )
    max_metadata_entries: int = Field(
        default=32, ge=0, description="Most ChatOptions.metadata entries accepted."
    )
    max_output_tokens_limit: int = Field(
        default=16_384, gt=0, description="Highest max_output_tokens a request may ask for."
    )
    stream_buffer_events: int = Field(
        default=1_024,
        gt=0,
        description="Events buffered per open stream; a client slower than this is cut off.",
    )
    max_open_streams: int = Field(
        default=10_000,
        gt=0,
        description=(
            "Replies streamed at once per replica, gRPC and HTTP together; more are refused "
            "with RESOURCE_EXHAUSTED (HTTP 429). Bounds the memory of open streams "
            "(docs/benchmarks.md: bytes per open stream)."
        ),
    )
    reply_idle_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description=(
            "Longest silence between two events of a reply before the client gets an error."
        ),
    )
    publish_timeout_s: float = Field(
        default=10.0, gt=0, description="Timeout of the publish of a request to Kafka, in s."
    )
    conversation_lock_ttl_s: float = Field(
        default=300.0,
        gt=0,
        description="A conversation lock outlives a crashed gateway by at most this long.",
    )
    # A conversation the gateway started or served stays known in Redis this long after its
    # last use (any replica then accepts its next message at once); after that, the memory
    # service is asked once. Unknown ids are NOT_FOUND.
    conversation_marker_ttl_s: int = Field(
        default=30 * 24 * 3600,
        ge=60,
        le=365 * 24 * 3600,
        description=(
            "How long a conversation stays known in Redis after its last use, in s; after "
            "that memory is asked."
        ),
    )
    shutdown_grace_s: float = Field(
        default=10.0,
        ge=0,
        description="On SIGTERM open streams may finish for this long; then they are cancelled.",
    )
    teardown_step_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="After the drain, each release (HTTP, gRPC server, Kafka, MongoDB, Redis, "
        "reply topic) may take this long; one that overruns is logged and skipped, so a stop "
        "always ends.",
    )

    # The HTTP door: the OpenAI-compatible API, the web chat widget and its demo page.
    http_enabled: bool = Field(
        default=True, description="Serve the HTTP API and the widget beside gRPC."
    )
    http_host: str = Field(default="127.0.0.1", description="Address the HTTP API listens on.")
    http_port: int = Field(
        default=15080, ge=0, le=65535, description="Port of the HTTP API (0 picks a free one)."
    )
    http_max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest HTTP request body; larger ones get 413. OpenAI clients send the "
        "whole message history, of which only the last user message is used.",
    )
    http_session_ttl_s: int = Field(
        default=30 * 24 * 3600,
        ge=60,
        description="A widget browser session (and what it owns) lives this long after its "
        "last use.",
    )
    http_sse_keepalive_s: float = Field(
        default=15.0,
        ge=1,
        le=300,
        description="A streamed reply silent this long (a tool running, text held back) gets "
        "an SSE comment line `: keepalive`, so that proxies do not cut it.",
    )
    http_hold_max_s: float = Field(
        default=20.0,
        gt=0,
        le=600,
        description="Longest a provisional answer (a cheap one the cascade may replace) is held "
        "back from a client that does not handle `reset`, from its first text; then it streams "
        "on, and a later cascade fails the stream with `reply_diverged`.",
    )
    http_hold_max_chars: int = Field(
        default=32_768,
        ge=1024,
        le=1_048_576,
        description="Most text of a provisional answer held back for such a client; beyond it "
        "the answer streams on as after `http_hold_max_s`.",
    )
    http_demo_widget_key: str = Field(
        default="pk-demo-widget",
        description="The publishable key the demo page at / embeds (the local demo tenant's, "
        "SWITCHBOARD_DEMO_WIDGET_KEY); empty serves no demo page.",
    )

    # gRPC server limits (see the README's "Gateway API").
    max_concurrent_rpcs: int = Field(
        default=10_000, gt=0, description="Open RPCs per replica; more are RESOURCE_EXHAUSTED."
    )
    max_concurrent_streams_per_connection: int = Field(
        default=1_000, gt=0, description="HTTP/2 streams per client connection."
    )
    max_receive_message_bytes: int = Field(
        default=64 * 1024, ge=1024, description="Largest request message, in bytes."
    )
    max_send_message_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="Largest response message, in bytes."
    )
    keepalive_time_s: float = Field(
        default=30.0, gt=0, description="Interval of the server's keepalive pings, in s."
    )
    keepalive_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="A keepalive ping unanswered this long closes the connection, in s.",
    )
    keepalive_min_client_ping_interval_s: float = Field(
        default=10.0,
        gt=0,
        description=(
            "Clients may ping at most this often (HTTP/2 PING policy); faster pings get GOAWAY."
        ),
    )
    max_connection_idle_s: float = Field(
        default=0.0, ge=0, description="Connections idle this long are closed; 0 keeps them."
    )

    # A caller that disconnects mid-reply cancels its generation after this long, unless a
    # retry with its request_id attached meanwhile (then the reply goes on for the retry).
    # 0 cancels at once. A passed deadline always cancels at once.
    disconnect_grace_s: float = Field(
        default=0.0,
        ge=0,
        description=(
            "After a caller disconnects mid-reply, wait this long for a retry to attach "
            "before cancelling; 0 cancels at once."
        ),
    )
    idempotency_ttl_s: int = Field(
        default=600,
        gt=0,
        description=(
            "Idempotency: a finished reply stays replayable this long (its events are kept in"
            " Redis)."
        ),
    )
    attach_poll_s: float = Field(
        default=1.0,
        gt=0,
        description="How long one blocking Redis read of an attached or replayed stream waits.",
    )
    record_buffer_events: int = Field(
        default=4_096,
        gt=0,
        description=(
            "Events of a reply waiting to be recorded in Redis; more than this and recording stops."
        ),
    )
    record_batch_window_s: float = Field(
        default=0.05,
        ge=0,
        le=5,
        description=(
            "Events recorded within this window go to Redis in one write (the rest with the "
            "reply's end): an attached retry lags the live reply by up to this much."
        ),
    )

    # Replicas: each instance refreshes its heartbeat; a live one deletes the reply topics of
    # instances whose heartbeat has been gone for the grace (and on two sweeps). The grace
    # lets a dead instance's running generations finish publishing to its topic.
    heartbeat_interval_s: float = Field(
        default=10.0,
        gt=0,
        description="How often this replica refreshes its heartbeat in Redis, in s.",
    )
    heartbeat_ttl_s: float = Field(
        default=30.0,
        gt=0,
        description="A heartbeat not refreshed for this long marks the replica gone, in s.",
    )
    reply_topic_sweep_interval_s: float = Field(
        default=60.0,
        gt=0,
        description="How often a live replica looks for abandoned reply topics, in s.",
    )
    abandoned_reply_topic_grace_s: float = Field(
        default=600.0,
        ge=0,
        description=(
            "A gone replica's reply topic is deleted this long after its heartbeat stopped, in s."
        ),
    )

    mongo: MongoSettings = Field(
        default_factory=MongoSettings, description="MongoDB (SWITCHBOARD_MONGO_*)."
    )
    memory: MemoryClientSettings = Field(
        default_factory=MemoryClientSettings,
        description="The memory service (SWITCHBOARD_GATEWAY_MEMORY_*).",
    )
    kafka: KafkaSettings = Field(
        default_factory=KafkaSettings, description="Kafka (SWITCHBOARD_KAFKA_*)."
    )
    redis: RedisSettings = Field(
        default_factory=RedisSettings, description="Redis (SWITCHBOARD_REDIS_*)."
    )
    telemetry: TelemetrySettings = Field(
        default_factory=TelemetrySettings, description="Traces and logs (SWITCHBOARD_TELEMETRY_*)."
    )
    health: HealthSettings = Field(
        default_factory=HealthSettings,
        description="Health and metrics endpoint (SWITCHBOARD_HEALTH_*).",
    )

    @model_validator(mode="after")
    def _heartbeat_outlives_its_interval(self) -> Self:
        if self.heartbeat_ttl_s <= self.heartbeat_interval_s:
            raise ValueError("heartbeat_ttl_s must be longer than heartbeat_interval_s")
        if self.reply_topic_sweep_interval_s < self.heartbeat_interval_s:
            raise ValueError("reply_topic_sweep_interval_s must be >= heartbeat_interval_s")
        if self.attach_poll_s >= self.redis.socket_timeout_s:
            # A blocking read longer than the socket timeout would fail as a timeout.
            raise ValueError(
                "attach_poll_s must be shorter than SWITCHBOARD_REDIS_SOCKET_TIMEOUT_S"
            )
        return self
