"""Memory service settings (`SWITCHBOARD_MEMORY_*`)."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from switchboard.common.settings import HealthSettings, KafkaSettings, TelemetrySettings


class MemorySettings(BaseSettings):
    """Everything the memory service reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_MEMORY_")

    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=15052, ge=0, le=65535)
    mongo_url: str = "mongodb://127.0.0.1:27017/"
    database: str = "switchboard"
    # Bounds server selection, connecting and every socket read of a MongoDB call.
    mongo_timeout_ms: int = Field(default=5_000, gt=0)
    consumer_group: str = "memory"
    # Turns written at once (one at a time per conversation).
    max_concurrent_writes: int = Field(default=16, gt=0)
    shutdown_grace_s: float = Field(default=5.0, ge=0)

    # ---- durability of `chat.turns` ------------------------------------------------------
    # Attempts of a failed write before the record is handed back to Kafka (NACK), which
    # redelivers it: while MongoDB is down the cycle repeats, so nothing is skipped.
    write_attempts: int = Field(default=5, ge=1)
    write_backoff_max_s: float = Field(default=5.0, gt=0)

    # ---- GetContext ----------------------------------------------------------------------
    default_context_tokens: int = Field(default=4_000, gt=0)
    # Newest unsummarised messages read to fill a window; older ones belong in the summary.
    context_scan_limit: int = Field(default=200, gt=0)
    # Newest messages kept on the conversation document, so that a context (and a summary
    # plan) is one read by key; older unsummarised ones are read from the messages.
    recent_messages: int = Field(default=40, gt=0)
    # Facts kept on the conversation document; a conversation with more reads them from the
    # facts collection instead.
    known_facts_limit: int = Field(default=100, gt=0)
    # Facts returned with a context, newest first (they also count against the budget).
    context_max_facts: int = Field(default=20, ge=0)
    # Token counts of recently seen texts, kept (by GetContext and by summary planning, each
    # its own): a context is mostly the previous one's messages again (counting a 40-message
    # window took 0.25 ms of a 1.5 ms GetContext).
    token_count_cache_size: int = Field(default=8_192, ge=0)
    # A context read gives up after this long (or the caller's deadline, if sooner) and
    # answers from the cache: the orchestrator's own timeout is 2 s.
    context_read_timeout_s: float = Field(default=1.0, gt=0)
    # The in-process cache that serves contexts while MongoDB is unreachable. Worst case
    # it holds conversations x messages texts (2,000 x 40 x 8,000 characters at most;
    # typical contact-center messages keep it to a few tens of MB).
    cache_max_conversations: int = Field(default=2_000, ge=0)
    cache_max_messages: int = Field(default=40, ge=1)
    cache_ttl_s: float = Field(default=1_800.0, gt=0)

    # ---- reads of whole conversations -----------------------------------------------------
    # GetConversation and ExportConversation return at most this many (the newest) messages.
    conversation_max_messages: int = Field(default=2_000, gt=0)
    list_default_page_size: int = Field(default=20, gt=0)
    list_max_page_size: int = Field(default=100, gt=0)

    # ---- rolling summaries ---------------------------------------------------------------
    # A summary is requested when the unsummarised messages pass this many tokens.
    summary_trigger_tokens: int = Field(default=1_500, gt=0)
    # The newest messages stay verbatim, outside the summary.
    summary_keep_recent_messages: int = Field(default=6, ge=0)
    # Input of one summary task (previous summary plus new messages) stays below this;
    # what does not fit waits for the next round.
    summary_max_input_tokens: int = Field(default=6_000, gt=0)
    summary_max_output_tokens: int = Field(default=300, gt=0)
    summary_tier: str = "cheap"
    # A requested summary that has not come back after this long may be requested again.
    summary_task_timeout_s: float = Field(default=120.0, gt=0)
    # Summary versions kept per conversation (the newest is the one in use).
    summary_versions_kept: int = Field(default=5, ge=1)
    # Tokens are counted with this model's tokenizer when deciding to summarise.
    summary_count_model: str = "gpt-4o-mini"

    # ---- feedback ------------------------------------------------------------------------
    feedback_max_comment_chars: int = Field(default=2_000, ge=0)
    # A rating may arrive just before the turn it rates is stored: wait this long for it.
    feedback_wait_s: float = Field(default=3.0, ge=0)

    # ---- retention -----------------------------------------------------------------------
    # For tenants without a configuration of their own.
    default_retention_days: int = Field(default=90, gt=0)
    sweep_interval_s: float = Field(default=3_600.0, gt=0)
    # Conversations removed per tenant and sweep: a large backlog is worked off over sweeps.
    sweep_batch_size: int = Field(default=500, gt=0)
    # How long a deleted conversation's tombstone drops late redeliveries of its turns.
    tombstone_keep_s: float = Field(default=7 * 24 * 3600.0, gt=0)

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
