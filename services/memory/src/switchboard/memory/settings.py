"""Memory service settings (`SWITCHBOARD_MEMORY_*`)."""

from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from switchboard.common.settings import HealthSettings, KafkaSettings, TelemetrySettings


class MemorySettings(BaseSettings):
    """Everything the memory service reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_MEMORY_")

    grpc_host: str = Field(default="127.0.0.1", description="Address the gRPC server listens on.")
    grpc_port: int = Field(
        default=15052, ge=0, le=65535, description="Port the gRPC server listens on."
    )
    mongo_url: str = Field(default="mongodb://127.0.0.1:27017/", description="MongoDB URL.")
    database: str = Field(default="switchboard", description="MongoDB database.")
    mongo_timeout_ms: int = Field(
        default=5_000,
        gt=0,
        description="Bounds server selection, connecting and every socket read of a MongoDB call.",
    )
    consumer_group: str = Field(
        default="memory",
        description="Consumer group of the chat.turns and summary-result consumers.",
    )
    max_concurrent_writes: int = Field(
        default=16, gt=0, description="Turns written at once (one at a time per conversation)."
    )
    shutdown_grace_s: float = Field(
        default=5.0, ge=0, description="How long running writes get to finish at a stop, in s."
    )

    # ---- durability of `chat.turns` ------------------------------------------------------
    write_attempts: int = Field(
        default=5,
        ge=1,
        description=(
            "Attempts of a failed write before the record is handed back to Kafka (NACK), "
            "which redelivers it: while MongoDB is down the cycle repeats, so nothing is "
            "skipped."
        ),
    )
    write_backoff_max_s: float = Field(
        default=5.0, gt=0, description="Longest backoff between write attempts, in s."
    )

    # ---- GetContext ----------------------------------------------------------------------
    default_context_tokens: int = Field(
        default=4_000, gt=0, description="Token budget of a context when the caller names none."
    )
    context_scan_limit: int = Field(
        default=200,
        gt=0,
        description=(
            "Newest unsummarised messages read to fill a window; older ones belong in the summary."
        ),
    )
    recent_messages: int = Field(
        default=40,
        gt=0,
        description=(
            "Newest messages kept on the conversation document, so that a context (and a "
            "summary plan) is one read by key; older unsummarised ones are read from the "
            "messages."
        ),
    )
    known_facts_limit: int = Field(
        default=100,
        gt=0,
        description=(
            "Facts kept on the conversation document; a conversation with more reads them "
            "from the facts collection instead."
        ),
    )
    context_max_facts: int = Field(
        default=20,
        ge=0,
        description=(
            "Facts returned with a context, newest first (they also count against the budget)."
        ),
    )
    token_count_cache_max_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=0,
        description=(
            "Bytes of token counts of recently seen texts kept (the texts plus 120 B each; by"
            " GetContext and by summary planning, each its own; 0: off): a context is mostly"
            " the previous one's messages again (counting a 40-message window took 0.25 ms of"
            " a 1.5 ms GetContext)."
        ),
    )
    context_read_timeout_s: float = Field(
        default=1.0,
        gt=0,
        description=(
            "A context read gives up after this long (or the caller's deadline, if sooner) "
            "and answers from the cache: the orchestrator's own timeout is 2 s."
        ),
    )
    cache_max_conversations: int = Field(
        default=2_000,
        ge=0,
        description=(
            "The in-process cache that serves contexts while MongoDB is unreachable. Worst "
            "case it holds conversations x messages texts (2,000 x 40 x 8,000 characters at "
            "most; typical contact-center messages keep it to a few tens of MB)."
        ),
    )
    cache_max_messages: int = Field(
        default=40, ge=1, description="Messages kept per cached conversation."
    )
    cache_max_bytes: int = Field(
        default=128 * 1024 * 1024,
        gt=0,
        description=(
            "Bytes of text the context cache holds at most (UTF-8, plus a fixed overhead per "
            "message and fact); least recently used conversations go first."
        ),
    )
    cache_ttl_s: float = Field(
        default=1_800.0, gt=0, description="A cached context older than this is not served, in s."
    )
    context_reuse: bool = Field(
        default=True,
        description=(
            "Answer a context from the cache without reading MongoDB when this replica read "
            "the previous turn's context and then received that turn, and nothing else, of "
            "the conversation (docs/decisions/0081-context-reuse.md)."
        ),
    )

    # ---- reads of whole conversations -----------------------------------------------------
    conversation_max_messages: int = Field(
        default=2_000,
        gt=0,
        description=(
            "GetConversation and ExportConversation return at most this many (the newest) messages."
        ),
    )
    list_default_page_size: int = Field(
        default=20, gt=0, description="Conversations per page of ListConversations by default."
    )
    list_max_page_size: int = Field(
        default=100, gt=0, description="Largest page of ListConversations."
    )

    # ---- rolling summaries ---------------------------------------------------------------
    summary_trigger_tokens: int = Field(
        default=1_500,
        gt=0,
        description="A summary is requested when the unsummarised messages pass this many tokens.",
    )
    summary_trigger_messages: int = Field(
        default=30,
        gt=0,
        description=(
            "A summary is also requested when more messages than this are unsummarised. Below "
            "recent_messages and cache_max_messages, so that the unsummarised messages stay in "
            "the window a context is read from (short turns pass it long before the tokens)."
        ),
    )
    summary_keep_recent_messages: int = Field(
        default=6, ge=0, description="The newest messages stay verbatim, outside the summary."
    )
    summary_max_input_tokens: int = Field(
        default=6_000,
        gt=0,
        description=(
            "Input of one summary task (previous summary plus new messages) stays below this;"
            " what does not fit waits for the next round."
        ),
    )
    summary_max_output_tokens: int = Field(
        default=300, gt=0, description="max_output_tokens of a summary task."
    )
    summary_tier: str = Field(default="cheap", description="Tier that writes summaries.")
    summary_task_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description=(
            "A requested summary that has not come back after this long may be requested again."
        ),
    )
    summary_versions_kept: int = Field(
        default=5,
        ge=1,
        description="Summary versions kept per conversation (the newest is the one in use).",
    )
    summary_count_model: str = Field(
        default="gpt-4o-mini",
        description="Tokens are counted with this model's tokenizer when deciding to summarise.",
    )

    # ---- feedback ------------------------------------------------------------------------
    feedback_max_comment_chars: int = Field(
        default=2_000, ge=0, description="Longest feedback comment, in characters."
    )
    feedback_wait_s: float = Field(
        default=3.0,
        ge=0,
        description=(
            "A rating may arrive just before the turn it rates is stored: wait this long for it."
        ),
    )

    # ---- retention -----------------------------------------------------------------------
    default_retention_days: int = Field(
        default=90, gt=0, description="For tenants without a configuration of their own."
    )
    sweep_interval_s: float = Field(
        default=3_600.0, gt=0, description="How often the retention sweep runs, in s."
    )
    sweep_batch_size: int = Field(
        default=500,
        gt=0,
        description=(
            "Conversations removed per tenant and sweep: a large backlog is worked off over sweeps."
        ),
    )
    tombstone_keep_s: float = Field(
        default=7 * 24 * 3600.0,
        gt=0,
        description=(
            "How long a deleted conversation's tombstone drops late redeliveries of its turns."
        ),
    )

    kafka: KafkaSettings = Field(
        default_factory=KafkaSettings, description="Kafka (SWITCHBOARD_KAFKA_*)."
    )
    telemetry: TelemetrySettings = Field(
        default_factory=TelemetrySettings, description="Traces and logs (SWITCHBOARD_TELEMETRY_*)."
    )
    health: HealthSettings = Field(
        default_factory=HealthSettings,
        description="Health and metrics endpoint (SWITCHBOARD_HEALTH_*).",
    )

    @model_validator(mode="after")
    def _summaries_keep_the_window_whole(self) -> Self:
        # Past the window, every context read reads the messages collection instead of one
        # document (in FerretDB, a scan of every message), so the trigger must come first.
        bound = min(self.recent_messages, self.cache_max_messages)
        if self.summary_trigger_messages >= bound:
            raise ValueError(
                f"summary_trigger_messages ({self.summary_trigger_messages}) must be below "
                f"recent_messages ({self.recent_messages}) and cache_max_messages "
                f"({self.cache_max_messages}): otherwise unsummarised messages outgrow the "
                "window that a context is read from"
            )
        return self
