"""Settings of the chat client, read from `SWITCHBOARD_CHAT_*` environment variables."""

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ChatCliSettings(BaseSettings):
    """Where the gateway is, who we are, and how long one reply may take."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_CHAT_", populate_by_name=True)

    target: str = Field(
        default="127.0.0.1:15051",
        description="host:port of the gateway's gRPC endpoint (plaintext).",
    )
    api_key: str = Field(
        default="sb-dev-key",
        min_length=1,
        validation_alias=AliasChoices("SWITCHBOARD_CHAT_API_KEY", "SWITCHBOARD_DEV_API_KEY"),
        description=(
            "SWITCHBOARD_CHAT_API_KEY wins over SWITCHBOARD_DEV_API_KEY, the key of the local"
            " stack."
        ),
    )
    user_id: str = Field(default="cli-user", description="user_id sent with each message.")
    tier: str = Field(
        default="",
        description=('"", "auto", "cheap" or "frontier"; empty lets the orchestrator decide.'),
    )
    timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="gRPC deadline of one message, from sending it to the end of its reply.",
    )
    # What the opening banner of an interactive chat shows (tools/chat-cli/README.md).
    http_url: str = Field(
        default="http://127.0.0.1:15080",
        description="Base URL of the gateway's HTTP edge (OpenAI-compatible API and demo page); "
        "the banner lists it only when its port answers.",
    )
    traces_url: str = Field(
        default="http://127.0.0.1:9411",
        description="The trace UI (Zipkin on the local stack), listed in the banner when its "
        "port answers.",
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
