"""Settings shared by the services, read from `SWITCHBOARD_*` environment variables.

Each group has its own prefix so that one shell can configure every service at once:
`SWITCHBOARD_KAFKA_*`, `SWITCHBOARD_REDIS_*`, `SWITCHBOARD_TELEMETRY_*`. A service's own
settings use `SWITCHBOARD_<SERVICE>_*` and embed these groups.
"""

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    """How to reach Kafka and how hard to try."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_KAFKA_")

    bootstrap_servers: str = "127.0.0.1:9092"
    # Prepended to every topic name; lets independent deployments share a cluster.
    topic_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$")
    request_timeout_ms: int = Field(default=10_000, gt=0)
    retry_backoff_ms: int = Field(default=100, gt=0)
    # No linger: a send waits for nothing but the batch already in flight to its broker, and
    # what arrives meanwhile (a burst of deltas) goes out together in the next request. A
    # linger of 1 ms cost 1.2 ms on every publish, three times on the way to a first token.
    linger_ms: int = Field(default=0, ge=0)
    max_batch_size: int = Field(default=64 * 1024, gt=0)
    max_request_size: int = Field(default=1024 * 1024, gt=0)
    session_timeout_ms: int = Field(default=10_000, gt=0)
    heartbeat_interval_ms: int = Field(default=3_000, gt=0)
    max_poll_interval_ms: int = Field(default=300_000, gt=0)
    # How often each service refreshes its consumer-lag gauge.
    lag_report_interval_s: float = Field(default=15.0, gt=0)
    # Bounded wait for the first connection at start-up.
    connect_timeout_s: float = Field(default=30.0, gt=0)
    consumer_max_attempts: int = Field(
        default=8,
        ge=1,
        le=100,
        description="Attempts at one consumed record before it goes to its dead-letter topic "
        "(the defaults span about a minute and a half: a backend outage shorter than that "
        "loses nothing; a poison record ends in its DLQ)",
    )
    consumer_backoff_initial_s: float = Field(
        default=1.0,
        gt=0,
        description="Pause after a record's first failed attempt; it doubles per attempt",
    )
    consumer_backoff_max_s: float = Field(
        default=30.0, gt=0, description="The longest pause between two attempts at a record"
    )


class RedisSettings(BaseSettings):
    """How to reach Redis."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_REDIS_")

    url: str = "redis://127.0.0.1:6379/0"
    socket_timeout_s: float = Field(default=2.0, gt=0)
    connect_timeout_s: float = Field(default=2.0, gt=0)
    # Connections per process; a call waits up to `pool_timeout_s` for a free one (the
    # client's own default fails at once past 100, which 100 open streams reach).
    max_connections: int = Field(default=256, ge=1)
    pool_timeout_s: float = Field(default=2.0, gt=0)


class TelemetrySettings(BaseSettings):
    """Where traces go and how much is logged."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_TELEMETRY_")

    # "otlp" sends to `otlp_endpoint` (the local stack's Jaeger, or a collector); "console"
    # prints spans; "none" keeps context propagation but exports nothing.
    exporter: Literal["otlp", "console", "none"] = "otlp"
    otlp_endpoint: str = "http://127.0.0.1:4317"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class HealthSettings(BaseSettings):
    """The HTTP endpoint with /healthz, /readyz and /metrics."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_HEALTH_")

    host: str = "127.0.0.1"
    # 0 disables the endpoint.
    port: int = Field(default=0, ge=0, le=65535)
