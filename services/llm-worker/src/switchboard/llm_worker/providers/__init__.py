"""Model providers through their official SDKs, reduced to one streaming interface.

Each provider translates Switchboard's messages and tools into its wire format, streams
text deltas, and ends with one `Finished` carrying the tool calls, the usage and a finish
reason normalized to OpenAI's words ("stop", "length", "tool_calls", "content_filter").
Failures become `ProviderError`s that say whether a retry may help; the SDKs' own retries
are off (`max_retries=0`) because the worker retries itself, the same way for failures
before and in the middle of a stream (see generation.py).

The modules: `base` (the interface), `errors` (failures and whether to retry), `wire` (the
wire formats), `sse` (server-sent events), `openai_provider` and `anthropic_provider`.
"""

from switchboard.llm_worker.providers.anthropic_provider import AnthropicProvider
from switchboard.llm_worker.providers.base import (
    Finished,
    GenerationRequest,
    InvalidTaskError,
    Provider,
    ProviderError,
    StreamEvent,
    TextDelta,
)
from switchboard.llm_worker.providers.errors import (
    RETRYABLE_STATUSES,
    SDK_ERRORS,
    classify,
    retry_after_s,
)
from switchboard.llm_worker.providers.openai_provider import OpenAIProvider
from switchboard.llm_worker.providers.sse import SSE_DRAIN_MAX_LINES, sse_data
from switchboard.llm_worker.providers.wire import (
    ANTHROPIC_STOP_REASONS,
    OPENAI_FINISH_REASONS,
    anthropic_messages,
    anthropic_tools,
    openai_messages,
    openai_tools,
    tool_schema,
)

__all__ = [
    "ANTHROPIC_STOP_REASONS",
    "OPENAI_FINISH_REASONS",
    "RETRYABLE_STATUSES",
    "SDK_ERRORS",
    "SSE_DRAIN_MAX_LINES",
    "AnthropicProvider",
    "Finished",
    "GenerationRequest",
    "InvalidTaskError",
    "OpenAIProvider",
    "Provider",
    "ProviderError",
    "StreamEvent",
    "TextDelta",
    "anthropic_messages",
    "anthropic_tools",
    "classify",
    "openai_messages",
    "openai_tools",
    "retry_after_s",
    "sse_data",
    "tool_schema",
]
