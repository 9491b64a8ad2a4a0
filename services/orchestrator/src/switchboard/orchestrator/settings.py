"""Orchestrator settings (`SWITCHBOARD_ORCHESTRATOR_*`)."""

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field
from pydantic.functional_validators import BeforeValidator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from switchboard.common.settings import (
    HealthSettings,
    KafkaSettings,
    RedisSettings,
    TelemetrySettings,
)


def _comma_separated(value: object) -> object:
    return (
        [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, str)
        else value
    )


class ContextReuseSettings(BaseSettings):
    """The next turn's context, extended here instead of read again (decision 0084)."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_ORCHESTRATOR_CONTEXT_REUSE_")

    enabled: bool = Field(
        default=True,
        description=(
            "Extend a complete context by the turn run here, for the conversation's next turn,"
            " instead of reading memory again; false: every turn reads memory."
        ),
    )
    max_messages: int = Field(
        default=40,
        ge=0,
        description=(
            "Past this many messages the next turn reads memory again, which by then holds a"
            " summary; keep it below memory's SWITCHBOARD_MEMORY_CONTEXT_SCAN_LIMIT."
        ),
    )
    max_facts: int = Field(
        default=20,
        ge=0,
        description=(
            "A context with this many facts is read from memory again; at most memory's"
            " SWITCHBOARD_MEMORY_CONTEXT_MAX_FACTS."
        ),
    )
    max_conversations: int = Field(
        default=10_000, ge=0, description="Conversations kept (least recently used go first)."
    )
    max_bytes: int = Field(
        default=32 * 1024 * 1024, gt=0, description="Bytes of kept contexts (encoded size)."
    )
    ttl_s: float = Field(
        default=900.0, gt=0, description="A kept context not used for this long is dropped."
    )


class OrchestratorSettings(BaseSettings):
    """Everything the orchestrator reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_ORCHESTRATOR_")

    consumer_group: str = Field(
        default="orchestrator", description="Consumer group of chat.requests and llm.results."
    )
    max_concurrency: int = Field(
        default=128, gt=0, description="Records handled at once (one at a time per conversation)."
    )
    shutdown_grace_s: float = Field(
        default=10.0,
        ge=0,
        description=(
            "How long open turns get to finish at a stop before they are left to be redelivered."
        ),
    )
    memory_target: str = Field(
        default="127.0.0.1:15052", description="host:port of the memory service's gRPC endpoint."
    )
    memory_timeout_s: float = Field(default=2.0, gt=0, description="Timeout of GetContext, in s.")
    context_max_tokens: int = Field(
        default=4_000, gt=0, description="Token budget asked of memory for a turn's context."
    )
    default_max_output_tokens: int = Field(
        default=512, gt=0, description="max_output_tokens of a turn that names none."
    )
    max_input_chars: int = Field(
        default=8_000,
        gt=0,
        description=(
            "Longest user message accepted (the gateway has its own, usually equal, limit)."
        ),
    )
    # Tenants and handoff tickets.
    mongo_url: str = Field(
        default="mongodb://127.0.0.1:27017/",
        description="MongoDB URL (tenants and handoff tickets).",
    )
    database: str = Field(default="switchboard", description="MongoDB database.")
    mongo_timeout_ms: int = Field(
        default=5_000, gt=0, description="Timeout of a MongoDB call, in ms."
    )
    tenant_cache_ttl_s: float = Field(
        default=30.0, ge=0, description="How long a tenant's configuration is cached, in s."
    )
    router_threshold: float = Field(
        default=0.5, gt=0, description="Rule score from which the rules route to frontier."
    )
    router_classifier: Literal["learned", "rules"] = Field(
        default="learned",
        description="'learned': the trained router (docs/routing.md), falling back to the rules "
        "when its artifact is missing or broken; 'rules': the rule-based classifier only.",
    )
    router_model_path: Path | None = Field(
        default=None,
        description="The learned router's artifact (router.json); unset: the one shipped with "
        "the orchestrator (make train-router writes it).",
    )
    router_models_dir: Path | None = Field(
        default=None,
        description="Directory of tenants' own router artifacts (<name>.json, named by a "
        "tenant's model_policy.router_model); unset: every tenant uses the service's router.",
    )
    router_tenant_models_max: int = Field(
        default=32, ge=1, le=10_000, description="Tenant router models kept loaded (LRU)."
    )
    router_target_recall: float | None = Field(
        default=None,
        ge=0.5,
        le=1.0,
        description="Default operating point of the learned router: the cheapest threshold "
        "keeping this recall of complex messages (on the calibration curve); unset: the "
        "artifact's own threshold. A tenant's model_policy.router_target_* overrides it.",
    )
    # Tool calls: rounds per turn, time limits, result sizes, HTTP hosts tools may call.
    max_tool_rounds: int = Field(default=5, ge=1, le=20, description="Tool-call rounds per turn.")
    builtin_tool_timeout_s: float = Field(
        default=5.0, gt=0, description="Timeout of one built-in or HTTP tool call, in s."
    )
    tool_result_max_chars: int = Field(
        default=4_000, gt=0, description="A tool result is cut to this many characters."
    )
    tool_registry_cache_size: int = Field(
        default=1_024,
        ge=1,
        description=(
            "Tenants whose built tool registries are kept (a registry checks its JSON schemas"
            " once)."
        ),
    )
    http_tool_max_response_bytes: int = Field(
        default=256 * 1024, gt=0, description="Largest HTTP tool response read, in bytes."
    )
    http_tool_allowed_hosts: Annotated[list[str], NoDecode, BeforeValidator(_comma_separated)] = (
        Field(
            default_factory=lambda: ["127.0.0.1:8086", "localhost:8086"],
            description="host:port pairs HTTP tools may call (comma-separated).",
        )
    )
    turn_state_ttl_s: int = Field(
        default=3_600,
        gt=0,
        description="How long a turn may wait for its generation before its state is forgotten.",
    )
    step_attempts: int = Field(
        default=5,
        ge=1,
        description="Retries of a failing step before the message is handed back to Kafka.",
    )
    step_backoff_max_s: float = Field(
        default=5.0, gt=0, description="Longest backoff between step retries, in s."
    )

    injection_classifier: bool = Field(
        default=True,
        description="Also score the message with the injection classifier beside the rules "
        "(it catches more attacks than the rules on sets nobody tuned it to; calibrated on "
        "sources it never saw so that everyday requests pass: "
        "docs/decisions/0012-injection-classifier-on-by-default.md). Its "
        "sentence embedding (SWITCHBOARD_EMBEDDINGS_*; the bundled model, the one the "
        "classifier was trained on) is computed once per turn and shared with knowledge "
        "retrieval.",
    )

    injection_rules_cache_size: int = Field(
        default=4_096,
        ge=0,
        le=1_000_000,
        description="Texts whose injection-rules verdict is remembered (by a 16-byte digest, "
        "about 300 bytes an entry): retrieved passages recur, and the rules cost ~15 ms on a "
        "long one. 0: off.",
    )

    context_reuse: ContextReuseSettings = Field(
        default_factory=ContextReuseSettings,
        description=(
            "The next turn's context extended here (SWITCHBOARD_ORCHESTRATOR_CONTEXT_REUSE_*)."
        ),
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
