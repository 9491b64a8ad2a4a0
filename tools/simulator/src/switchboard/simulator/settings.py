"""Configuration of the provider simulator, read from `SWITCHBOARD_SIM_*` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODELS = (
    "gpt-4o-mini",
    "gpt-4o",
    "claude-haiku-4-5",
    "claude-sonnet-4-5",
    "claude-sonnet-4-6",
)


class Settings(BaseSettings):
    """Simulator settings; every field can be set as `SWITCHBOARD_SIM_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_SIM_", frozen=True)

    host: str = Field(default="127.0.0.1", description="Address the simulator listens on.")
    port: int = Field(default=8400, ge=0, le=65535, description="0 picks a free port")
    ttft_ms: float = Field(default=50.0, ge=0, description="delay before the first token")
    token_delay_ms: float = Field(default=10.0, ge=0, description="delay between two tokens")
    reply_tokens: int = Field(default=40, ge=1, description="length of a reply in tokens")
    journal_size: int = Field(default=1000, ge=0, description="requests kept by /_journal")
    context_window: int = Field(
        default=128_000, ge=1, description="prompts longer than this in tokens are rejected"
    )
    models: tuple[str, ...] = Field(
        default=DEFAULT_MODELS,
        description="models listed by GET /v1/models (any model name is accepted)",
    )
    max_body_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1024, description="largest request body accepted, in bytes"
    )
    access_log: bool = Field(default=False, description="log every request (slow under load)")
    shutdown_timeout_s: float = Field(default=5.0, ge=0, description="grace for open streams")
    log_level: str = Field(default="INFO", description="log level")
    # Defaults of the per-request controls (see controls.py and the README).
    fault: str | None = Field(
        default=None, description="429, 500, hang or disconnect on every request; none by default"
    )
    fault_attempts: int = Field(
        default=0, ge=0, description="inject the fault only on the first N attempts; 0 = all"
    )
    fault_after_tokens: int | None = Field(
        default=None, ge=0, description="tokens sent before hang/disconnect; unset = half"
    )
    retry_after_ms: int = Field(default=0, ge=0, description="Retry-After sent with a 429")
    attempt_keys: int = Field(
        default=10_000, ge=1, description="request keys whose attempts are remembered"
    )

    @property
    def ttft_s(self) -> float:
        """Time to first token, in seconds."""
        return self.ttft_ms / 1000.0

    @property
    def token_delay_s(self) -> float:
        """Delay between two tokens, in seconds."""
        return self.token_delay_ms / 1000.0
