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

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Kafka brokers, comma-separated host:port."
    )
    topic_prefix: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9._-]*$",
        description="Prepended to every topic name; lets independent deployments share a cluster.",
    )
    request_timeout_ms: int = Field(
        default=10_000, gt=0, description="Timeout of one request to a broker, in ms."
    )
    retry_backoff_ms: int = Field(
        default=100, gt=0, description="Wait before a failed broker request is retried, in ms."
    )
    # No linger: a send waits for nothing but the batch already in flight to its broker, and
    # what arrives meanwhile (a burst of deltas) goes out together in the next request. A
    # linger of 1 ms cost 1.2 ms on every publish, three times on the way to a first token.
    linger_ms: int = Field(
        default=0, ge=0, description="How long a producer waits to fill a batch, in ms."
    )
    max_batch_size: int = Field(
        default=64 * 1024, gt=0, description="Largest producer batch per partition, in bytes."
    )
    max_request_size: int = Field(
        default=1024 * 1024, gt=0, description="Largest produce request, in bytes."
    )
    session_timeout_ms: int = Field(
        default=10_000,
        gt=0,
        description="A consumer silent this long (ms) leaves its group; its partitions move.",
    )
    heartbeat_interval_ms: int = Field(
        default=3_000, gt=0, description="Consumer heartbeat interval, in ms."
    )
    max_poll_interval_ms: int = Field(
        default=300_000,
        gt=0,
        description="Longest gap between two polls (ms) before a consumer leaves its group.",
    )
    lag_report_interval_s: float = Field(
        default=15.0, gt=0, description="How often each service refreshes its consumer-lag gauge."
    )
    connect_timeout_s: float = Field(
        default=30.0, gt=0, description="Bounded wait for the first connection at start-up."
    )
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


class ProcessSettings(BaseSettings):
    """How each service's Python process is tuned."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_PROCESS_")

    # Python's default is 5 ms: while a helper thread runs Python (the embedding's tokenizer,
    # token counting), the event loop's thread waited up to that long for the GIL on every
    # wake-up, and each hop of a turn paid it. 0.5 ms cut the one-at-a-time TTFT p99 from
    # 70/64 to 44/49 ms in alternating runs (docs/benchmarks.md).
    gil_switch_interval_ms: float = Field(
        default=0.5,
        gt=0,
        le=100,
        description=(
            "How long a thread may hold the GIL while another waits for it, in ms (Python's"
            " default is 5): shorter lets the event loop's thread in sooner."
        ),
    )


class RedisSettings(BaseSettings):
    """How to reach Redis."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_REDIS_")

    url: str = Field(default="redis://127.0.0.1:6379/0", description="Redis URL.")
    socket_timeout_s: float = Field(
        default=2.0, gt=0, description="Timeout of one Redis command, in s."
    )
    connect_timeout_s: float = Field(
        default=2.0, gt=0, description="Timeout of a new Redis connection, in s."
    )
    max_connections: int = Field(
        default=256,
        ge=1,
        description=(
            "Connections per process; a call waits up to `pool_timeout_s` for a free one (the"
            " client's own default fails at once past 100, which 100 open streams reach)."
        ),
    )
    pool_timeout_s: float = Field(
        default=2.0, gt=0, description="How long a call waits for a free Redis connection, in s."
    )


class TelemetrySettings(BaseSettings):
    """Where traces go and how much is logged."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_TELEMETRY_")

    # "otlp" sends to `otlp_endpoint` (the local stack's Jaeger, or a collector); "console"
    # prints spans; "none" keeps context propagation but exports nothing.
    exporter: Literal["otlp", "console", "none"] = Field(
        default="otlp",
        description=(
            "Where spans go: otlp (to otlp_endpoint), console, or none (context still propagates)."
        ),
    )
    otlp_endpoint: str = Field(
        default="http://127.0.0.1:4317",
        description="OTLP/gRPC endpoint of the trace collector (the local stack's Jaeger).",
    )
    # The local stack's trace UI is Zipkin (docs/decisions/0005-trace-ui.md); Jaeger, which
    # the OTLP exporter feeds, serves no UI from a registry-built binary.
    zipkin_endpoint: str = Field(
        default="",
        description=(
            "Also send spans to this Zipkin v2 endpoint (e.g. http://127.0.0.1:9411/api/v2/spans,"
            " the local trace UI); empty: off."
        ),
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level."
    )
    # Head sampling, decided once at the turn's first hop and followed by every later hop
    # (parent-based), so a turn's trace is whole or absent.
    sample_ratio: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description=(
            "Share of new traces recorded (0..1); a hop with a sampled or unsampled parent"
            " follows its parent's decision."
        ),
    )
    batch_schedule_delay_ms: int = Field(
        default=5_000, ge=1, description="Longest wait before a batch of spans is exported."
    )
    batch_max_queue_size: int = Field(
        default=2_048,
        ge=1,
        description="Spans buffered for export per exporter; beyond it new spans are dropped.",
    )
    # The export encodes its spans in Python while holding the GIL: 512 spans held it ~23 ms
    # and slowed the event loop of whatever turn was in flight. With 64 per call (sent as
    # soon as 64 wait) the one-at-a-time TTFT p99 went 46/37/39/37/39 -> 36/36 ms in
    # alternating 600-request runs (docs/benchmarks.md), the same as with no export at all.
    batch_max_export_size: int = Field(
        default=64,
        ge=1,
        description=(
            "Most spans sent in one export call; an export starts as soon as this many wait."
        ),
    )


class HealthSettings(BaseSettings):
    """The HTTP endpoint with /healthz, /readyz and /metrics."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_HEALTH_")

    host: str = Field(
        default="127.0.0.1", description="Address of the /healthz, /readyz and /metrics endpoint."
    )
    # 0 disables the endpoint.
    port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port of the /healthz, /readyz and /metrics endpoint; 0 disables it.",
    )
