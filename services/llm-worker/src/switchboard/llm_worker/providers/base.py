"""The one streaming interface every provider implements: the request, the events, the
errors."""

from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from switchboard.v1.events_pb2 import ChatMessage, GenerationParams, ToolCall, ToolSpec


@dataclass(frozen=True)
class TextDelta:
    """A piece of generated text."""

    text: str


@dataclass(frozen=True)
class Finished:
    """The end of a generation, with what the provider reported."""

    finish_reason: str
    input_tokens: int
    output_tokens: int
    tool_calls: tuple[ToolCall, ...] = ()
    response_model: str = ""


StreamEvent = TextDelta | Finished


@dataclass(frozen=True)
class GenerationRequest:
    """One call to a model."""

    model: str
    messages: Sequence[ChatMessage]
    tools: Sequence[ToolSpec] = ()
    params: GenerationParams = field(default_factory=GenerationParams)
    # Extra HTTP headers, e.g. the simulator's `x-sim-*` controls.
    headers: Mapping[str, str] = field(default_factory=dict)
    default_max_output_tokens: int = 1024


class ProviderError(Exception):
    """A call failed; `retryable` says whether the same call may succeed later."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        kind: str,
        retry_after_s: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.kind = kind
        self.retry_after_s = retry_after_s
        self.status = status


class InvalidTaskError(ValueError):
    """The task cannot be sent to any provider (e.g. a tool schema that is not JSON)."""


class Provider(Protocol):
    """Streams one generation."""

    name: str

    def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamEvent, None]: ...
