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


class OrchestratorSettings(BaseSettings):
    """Everything the orchestrator reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_ORCHESTRATOR_")

    consumer_group: str = "orchestrator"
    # Records handled at once (one at a time per conversation).
    max_concurrency: int = Field(default=128, gt=0)
    # How long open turns get to finish at a stop before they are left to be redelivered.
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    memory_target: str = "127.0.0.1:15052"
    memory_timeout_s: float = Field(default=2.0, gt=0)
    context_max_tokens: int = Field(default=4_000, gt=0)
    default_max_output_tokens: int = Field(default=512, gt=0)
    # Longest user message accepted (the gateway has its own, usually equal, limit).
    max_input_chars: int = Field(default=8_000, gt=0)
    # Tenants and handoff tickets.
    mongo_url: str = "mongodb://127.0.0.1:27017/"
    database: str = "switchboard"
    mongo_timeout_ms: int = Field(default=5_000, gt=0)
    tenant_cache_ttl_s: float = Field(default=30.0, ge=0)
    # Routing: complexity score from which a turn goes to the frontier tier.
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
    max_tool_rounds: int = Field(default=5, ge=1, le=20)
    builtin_tool_timeout_s: float = Field(default=5.0, gt=0)
    tool_result_max_chars: int = Field(default=4_000, gt=0)
    # Tenants whose built tool registries are kept (a registry checks its JSON schemas once).
    tool_registry_cache_size: int = Field(default=1_024, ge=1)
    http_tool_max_response_bytes: int = Field(default=256 * 1024, gt=0)
    http_tool_allowed_hosts: Annotated[list[str], NoDecode, BeforeValidator(_comma_separated)] = (
        Field(default_factory=lambda: ["127.0.0.1:8086", "localhost:8086"])
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
