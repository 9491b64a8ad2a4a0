"""Settings of the chat client, read from `SWITCHBOARD_CHAT_*` environment variables."""

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ChatCliSettings(BaseSettings):
    """Where the gateway is, who we are, and how long one reply may take."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_CHAT_", populate_by_name=True)

    # host:port of the gateway's gRPC endpoint (plaintext).
    target: str = "127.0.0.1:15051"
    # SWITCHBOARD_CHAT_API_KEY wins over SWITCHBOARD_DEV_API_KEY, the key of the local stack.
    api_key: str = Field(
        default="sb-dev-key",
        min_length=1,
        validation_alias=AliasChoices("SWITCHBOARD_CHAT_API_KEY", "SWITCHBOARD_DEV_API_KEY"),
    )
    user_id: str = "cli-user"
    # "", "auto", "cheap" or "frontier"; empty lets the orchestrator decide.
    tier: str = ""
    # gRPC deadline of one message, from sending it to the end of its reply.
    timeout_s: float = Field(default=120.0, gt=0)
    # What the opening banner of an interactive chat shows (tools/chat-cli/README.md).
    http_url: str = Field(
        default="http://127.0.0.1:15080",
        description="Base URL of the gateway's HTTP edge (OpenAI-compatible API and demo page); "
        "the banner lists it only when its port answers.",
    )
    traces_url: str = Field(
        default="http://127.0.0.1:16686",
        description="Jaeger's UI, listed in the banner when its port answers.",
    )
    probe_timeout_s: float = Field(
        default=0.3,
        gt=0,
        le=5,
        description="How long the banner waits for each address it checks before leaving it out.",
    )
    banner: bool = Field(
        default=True,
        description="Open an interactive chat with the banner (what runs where, suggestions).",
    )
