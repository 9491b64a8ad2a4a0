"""Worker settings (`SWITCHBOARD_LLM_WORKER_*`) and provider credentials."""

import os
import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic.functional_validators import BeforeValidator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from switchboard.common.settings import HealthSettings, KafkaSettings, TelemetrySettings

SIMULATOR_URL = "http://127.0.0.1:8400"


class ModelSpec(BaseModel):
    """One entry of the model catalogue."""

    provider: Literal["openai", "anthropic"]
    model: str
    input_usd_per_mtok: float = Field(ge=0)
    output_usd_per_mtok: float = Field(ge=0)
    context_window: int = Field(gt=0)

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
                model="claude-sonnet-4-5",
                input_usd_per_mtok=3.0,
                output_usd_per_mtok=15.0,
                context_window=200_000,
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


class ProviderSettings(BaseSettings):
    """Endpoints and keys. Without a key the provider is the bundled simulator."""

    model_config = SettingsConfigDict(env_prefix="")

    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str | None = None

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

    # Which tiers this process serves: "cheap", "frontier" or "cheap,frontier".
    tiers: Annotated[list[str], NoDecode, BeforeValidator(_comma_separated)] = Field(
        default_factory=lambda: ["cheap", "frontier"], min_length=1
    )
    instance_id: str = Field(default_factory=lambda: f"{os.getpid()}-{uuid.uuid4().hex[:6]}")
    consumer_group_prefix: str = "llm-worker"
    catalogue: dict[str, list[ModelSpec]] = Field(default_factory=_default_catalogue)
    # Deltas are sent at once when this long passed since the last send, or when this
    # much text is waiting; otherwise they are joined into one reply event.
    coalesce_window_ms: float = Field(default=15.0, ge=0)
    coalesce_max_chars: int = Field(default=256, gt=0)
    request_timeout_s: float = Field(default=60.0, gt=0)
    # Retries per model inside the SDK (429, 5xx, timeouts; honouring Retry-After).
    max_retries: int = Field(default=2, ge=0, le=10)

    providers: ProviderSettings = Field(default_factory=ProviderSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
