"""Anthropic's Messages API streaming."""

import json
from collections.abc import AsyncGenerator
from typing import Any, cast

import anthropic

from switchboard.llm_worker.providers.base import (
    Finished,
    GenerationRequest,
    StreamEvent,
    TextDelta,
)
from switchboard.llm_worker.providers.errors import SDK_ERRORS, classify
from switchboard.llm_worker.providers.wire import (
    ANTHROPIC_STOP_REASONS,
    anthropic_messages,
    anthropic_tools,
)
from switchboard.v1.events_pb2 import ToolCall


class AnthropicProvider:
    """Messages API streaming."""

    name = "anthropic"

    def __init__(self, base_url: str, api_key: str, timeout_s: float) -> None:
        self._client = anthropic.AsyncAnthropic(
            base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0
        )

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamEvent, None]:
        """Yield text deltas, then one `Finished`."""
        system, turns = anthropic_messages(request.messages)
        extra: dict[str, Any] = {}
        if system:
            extra["system"] = system
        if request.params.HasField("temperature"):
            extra["temperature"] = min(request.params.temperature, 1.0)
        if request.tools:
            extra["tools"] = anthropic_tools(request.tools)
        if request.headers:
            extra["extra_headers"] = dict(request.headers)
        try:
            async with self._client.messages.stream(
                model=request.model,
                messages=cast(Any, turns),
                max_tokens=request.params.max_output_tokens or request.default_max_output_tokens,
                **extra,
            ) as stream:
                async for event in stream:
                    if event.type == "text":
                        yield TextDelta(event.text)
                final = await stream.get_final_message()
        except SDK_ERRORS as exc:
            raise classify(self.name, request.model, exc) from exc
        stop_reason = final.stop_reason or "end_turn"
        yield Finished(
            ANTHROPIC_STOP_REASONS.get(stop_reason, stop_reason),
            final.usage.input_tokens,
            final.usage.output_tokens,
            tuple(
                ToolCall(
                    id=block.id,
                    name=block.name,
                    arguments_json=json.dumps(block.input, separators=(",", ":")),
                )
                for block in final.content
                if block.type == "tool_use"
            ),
            final.model,
        )

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._client.close()
