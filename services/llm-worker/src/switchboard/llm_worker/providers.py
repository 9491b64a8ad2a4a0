"""Model providers through their official SDKs, reduced to one streaming interface."""

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import anthropic
import openai
from openai.types.chat import ChatCompletionMessageParam

from switchboard.v1.chat_pb2 import ROLE_ASSISTANT, ROLE_SYSTEM, ROLE_TOOL, ROLE_USER
from switchboard.v1.events_pb2 import ChatMessage, GenerationParams


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


StreamEvent = TextDelta | Finished


class ProviderError(Exception):
    """The provider failed for good (after the SDK's own retries)."""


class Provider(Protocol):
    """Streams one generation."""

    name: str

    def stream(
        self, model: str, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[StreamEvent]: ...


_OPENAI_ROLES = {
    ROLE_SYSTEM: "system",
    ROLE_USER: "user",
    ROLE_ASSISTANT: "assistant",
    ROLE_TOOL: "tool",
}


class OpenAIProvider:
    """Chat Completions streaming; `base_url` serves any OpenAI-compatible server."""

    name = "openai"

    def __init__(self, base_url: str, api_key: str, timeout_s: float, max_retries: int) -> None:
        self._client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries
        )

    async def stream(
        self, model: str, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[StreamEvent]:
        """Yield text deltas, then one `Finished`."""
        extra: dict[str, Any] = {}
        if params.HasField("temperature"):
            extra["temperature"] = params.temperature
        try:
            stream = await self._client.chat.completions.create(
                model=model,
                messages=[
                    cast(
                        ChatCompletionMessageParam,
                        {"role": _OPENAI_ROLES[m.role], "content": m.text},
                    )
                    for m in messages
                ],
                max_completion_tokens=params.max_output_tokens or None,
                stream=True,
                stream_options={"include_usage": True},
                **extra,
            )
            finish_reason = "stop"
            input_tokens = output_tokens = 0
            async for chunk in stream:
                for choice in chunk.choices:
                    if choice.delta.content:
                        yield TextDelta(choice.delta.content)
                    if choice.finish_reason:
                        finish_reason = choice.finish_reason
                if chunk.usage is not None:
                    input_tokens = chunk.usage.prompt_tokens
                    output_tokens = chunk.usage.completion_tokens
        except openai.APIError as exc:
            raise ProviderError(f"openai {model}: {exc}") from exc
        yield Finished(finish_reason, input_tokens, output_tokens)

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._client.close()


class AnthropicProvider:
    """Messages API streaming."""

    name = "anthropic"

    def __init__(self, base_url: str, api_key: str, timeout_s: float, max_retries: int) -> None:
        self._client = anthropic.AsyncAnthropic(
            base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries
        )

    async def stream(
        self, model: str, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[StreamEvent]:
        """Yield text deltas, then one `Finished`."""
        # Anthropic takes the system prompt apart from the turns.
        system = "\n\n".join(m.text for m in messages if m.role == ROLE_SYSTEM)
        turns: list[Any] = [
            {"role": "assistant" if m.role == ROLE_ASSISTANT else "user", "content": m.text}
            for m in messages
            if m.role != ROLE_SYSTEM
        ]
        extra: dict[str, Any] = {}
        if system:
            extra["system"] = system
        if params.HasField("temperature"):
            extra["temperature"] = min(params.temperature, 1.0)
        try:
            async with self._client.messages.stream(
                model=model,
                messages=turns,
                max_tokens=params.max_output_tokens or 1024,
                **extra,
            ) as stream:
                async for text in stream.text_stream:
                    yield TextDelta(text)
                final = await stream.get_final_message()
        except anthropic.APIError as exc:
            raise ProviderError(f"anthropic {model}: {exc}") from exc
        yield Finished(
            final.stop_reason or "end_turn", final.usage.input_tokens, final.usage.output_tokens
        )

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._client.close()
