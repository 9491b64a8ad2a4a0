"""Worker settings (`SWITCHBOARD_LLM_WORKER_*`) and provider credentials."""

import os
import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic.functional_validators import BeforeValidator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from switchboard.common.settings import (
    HealthSettings,
    KafkaSettings,
    RedisSettings,
    TelemetrySettings,
)

SIMULATOR_URL = "http://127.0.0.1:8400"


class ModelSpec(BaseModel):
    """One entry of the model catalogue."""

    provider: Literal["openai", "anthropic"] = Field(
        description="Provider SDK: openai or anthropic."
    )
    model: str = Field(description="The provider's model name.")
    input_usd_per_mtok: float = Field(ge=0, description="Price of a million input tokens, in USD.")
    output_usd_per_mtok: float = Field(
        ge=0, description="Price of a million output tokens, in USD."
    )
    context_window: int = Field(gt=0, description="The model's context window, in tokens.")

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        """What a call with this usage costs."""
        return (
            input_tokens * self.input_usd_per_mtok + output_tokens * self.output_usd_per_mtok
        ) / 1_000_000


def _default_catalogue() -> dict[str, list[ModelSpec]]:
    return {
        "cheap": [
            ModelSpec(
                provider="openai",
                model="gpt-4o-mini",
                input_usd_per_mtok=0.15,
                output_usd_per_mtok=0.60,
                context_window=128_000,
            )
        ],
        "frontier": [
            ModelSpec(
                provider="anthropic",
                # claude-sonnet-4-5 reaches end of life on 2026-11-30 (the SDK's deprecation
                # list); 4.6 takes the same requests. Sonnet 5.x rejects sampling parameters
                # and thinks by default: moving to it needs the worker to handle both.
                model="claude-sonnet-4-6",
                input_usd_per_mtok=3.0,
                output_usd_per_mtok=15.0,
                context_window=1_000_000,
            ),
            ModelSpec(
                provider="openai",
                model="gpt-4o",
                input_usd_per_mtok=2.5,
                output_usd_per_mtok=10.0,
                context_window=128_000,
            ),
        ],
    }


def _comma_separated(value: object) -> object:
    return (
        [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, str)
        else value
    )


def _provider_settings() -> "ProviderSettings":
    # Keys may also be files named `openai_api_key` / `anthropic_api_key` in a directory
    # (a mounted Kubernetes secret); the environment wins over the files.
    secrets_dir = os.environ.get("SWITCHBOARD_SECRETS_DIR")
    if secrets_dir and os.path.isdir(secrets_dir):
        return ProviderSettings(_secrets_dir=secrets_dir)
    return ProviderSettings()


class ProviderSettings(BaseSettings):
    """Endpoints and keys. Without a key the provider is the bundled simulator.

    Keys are read from the environment (`OPENAI_API_KEY`, `ANTHROPIC_API_KEY`) or from
    files in `SWITCHBOARD_SECRETS_DIR`, kept as secrets and never logged.
    """

    model_config = SettingsConfigDict(env_prefix="")

    openai_api_key: SecretStr | None = Field(
        default=None, description="OpenAI API key (OPENAI_API_KEY); unset: the simulator."
    )
    openai_base_url: str | None = Field(
        default=None, description="OpenAI-compatible base URL (OPENAI_BASE_URL)."
    )
    anthropic_api_key: SecretStr | None = Field(
        default=None, description="Anthropic API key (ANTHROPIC_API_KEY); unset: the simulator."
    )
    anthropic_base_url: str | None = Field(
        default=None, description="Anthropic base URL (ANTHROPIC_BASE_URL)."
    )

    def openai(self) -> tuple[str, str]:
        """(base_url, api_key) for the OpenAI SDK."""
        if self.openai_api_key is None:
            return self.openai_base_url or f"{SIMULATOR_URL}/v1", "simulator"
        return (
            self.openai_base_url or "https://api.openai.com/v1",
            self.openai_api_key.get_secret_value(),
        )

    def anthropic(self) -> tuple[str, str]:
        """(base_url, api_key) for the Anthropic SDK."""
        if self.anthropic_api_key is None:
            return self.anthropic_base_url or SIMULATOR_URL, "simulator"
        return (
            self.anthropic_base_url or "https://api.anthropic.com",
            self.anthropic_api_key.get_secret_value(),
        )


class WorkerSettings(BaseSettings):
    """Everything a worker process reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_LLM_WORKER_")

    tiers: Annotated[list[str], NoDecode, BeforeValidator(_comma_separated)] = Field(
        default_factory=lambda: ["cheap", "frontier"],
        min_length=1,
        description=('Which tiers this process serves: "cheap", "frontier" or "cheap,frontier".'),
    )
    instance_id: str = Field(
        default_factory=lambda: f"{os.getpid()}-{uuid.uuid4().hex[:6]}",
        description="This worker's id, in logs and metrics (default: pid and a random suffix).",
    )
    consumer_group_prefix: str = Field(
        default="llm-worker", description="Consumer group of a tier: <prefix>-<tier>."
    )
    catalogue: dict[str, list[ModelSpec]] = Field(
        default_factory=_default_catalogue,
        description="Per tier, the ordered list of models to try (JSON).",
    )
    max_concurrency: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description="Generations running at once in this process, over all its tiers.",
    )
    coalesce_window_ms: float = Field(
        default=15.0,
        ge=0,
        description=(
            "After the first text, deltas are sent when this long passed since the last send, "
            "one send at a time: what arrives while a send is in flight joins the next event "
            "(a busy worker sends fewer, larger events). A timer sends waiting text when the "
            "window closes even if the provider stalls."
        ),
    )
    coalesce_max_chars: int = Field(
        default=256,
        gt=0,
        description=(
            "Waiting text that is sent at once, in characters; behind a send in flight, the "
            "stream is read on only while less than this waits."
        ),
    )
    request_timeout_s: float = Field(
        default=60.0, gt=0, description="The SDKs' HTTP timeout (connect, and each read)."
    )
    stream_idle_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description=(
            "A stream that sends nothing for this long (before its first token too) has failed."
        ),
    )
    attempt_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="The longest one call to a model may take, stream included.",
    )
    max_retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description=(
            "Retries per model of 429, 5xx, timeouts and broken streams (the SDKs' own "
            "retries are off), with exponential backoff and jitter, waiting at least what "
            "Retry-After asks; then the next model of the tier."
        ),
    )
    retry_backoff_initial_s: float = Field(
        default=0.5, gt=0, description="First retry backoff, in s."
    )
    retry_backoff_max_s: float = Field(
        default=8.0, gt=0, description="Longest retry backoff, in s."
    )
    retry_after_max_s: float = Field(
        default=30.0,
        ge=0,
        description="A Retry-After longer than this sends the task to the next model at once.",
    )
    default_max_output_tokens: int = Field(
        default=1024,
        gt=0,
        description=(
            "max_tokens for providers that require one, when the task leaves it to the tier."
        ),
    )
    send_error_events: bool = Field(
        default=True,
        description=(
            "Send `error` to the client when a task fails for good (the orchestrator also "
            "learns it from the result)."
        ),
    )
    forward_sim_controls: bool = Field(
        default=True,
        description=(
            "Forward the task's `sim.*` metadata to providers as `x-sim-*` headers (the "
            "simulator's per-request controls; real providers ignore them)."
        ),
    )
    shutdown_grace_s: float = Field(
        default=10.0,
        ge=0,
        description=(
            "How long a stopping worker lets running generations finish; the rest are "
            "abandoned uncommitted and redelivered to another worker."
        ),
    )
    poll_timeout_ms: int = Field(
        default=200,
        gt=0,
        le=10_000,
        description="How long the consumer waits for records in one poll.",
    )
    commit_interval_ms: int = Field(
        default=100,
        ge=0,
        le=60_000,
        description="Least time between two offset commits of one consumer.",
    )
    rebalance_wait_s: float = Field(
        default=30.0,
        gt=0,
        description=(
            "How long a finished task waits for a rebalance under way to settle before "
            "publishing its result (only a worker that still owns the task's partition "
            "publishes it)."
        ),
    )
    task_retry_backoff_s: float = Field(
        default=2.0,
        gt=0,
        description=(
            "Pause before a task whose processing failed (Kafka or Redis down) is fetched again."
        ),
    )
    step_attempts: int = Field(
        default=4,
        ge=1,
        le=20,
        description="Bounded retries of the worker's own Kafka and Redis steps.",
    )
    step_backoff_max_s: float = Field(
        default=2.0, gt=0, description="Longest backoff between those retries, in s."
    )
    task_state_ttl_s: int = Field(
        default=24 * 3600,
        gt=0,
        description="How long attempt counters and finished-task marks stay in Redis.",
    )
    cancelled_memory: int = Field(
        default=10_000,
        ge=0,
        description="Cancellations remembered for tasks that have not arrived yet.",
    )

    providers: ProviderSettings = Field(
        default_factory=_provider_settings, description="Provider keys and base URLs."
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
    def _every_tier_has_models(self) -> "WorkerSettings":
        missing = [tier for tier in self.tiers if not self.catalogue.get(tier)]
        if missing:
            raise ValueError(f"the catalogue has no model for tier(s) {', '.join(missing)}")
        return self
