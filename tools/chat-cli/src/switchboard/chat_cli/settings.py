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
