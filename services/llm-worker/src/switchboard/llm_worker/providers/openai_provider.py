"""OpenAI's Chat Completions streaming, for any OpenAI-compatible server."""

from collections.abc import AsyncGenerator
from typing import Any

import openai

from switchboard.llm_worker.providers.base import (
    Finished,
    GenerationRequest,
    ProviderError,
    StreamEvent,
    TextDelta,
)
from switchboard.llm_worker.providers.errors import SDK_ERRORS, classify
from switchboard.llm_worker.providers.sse import error_message, sse_data
from switchboard.llm_worker.providers.wire import (
    OPENAI_FINISH_REASONS,
    openai_messages,
    openai_tools,
)
from switchboard.v1.events_pb2 import ToolCall


class OpenAIProvider:
    """Chat Completions streaming; `base_url` serves any OpenAI-compatible server."""

    name = "openai"

    def __init__(self, base_url: str, api_key: str, timeout_s: float) -> None:
        self._client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0
        )

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamEvent, None]:
        """Yield text deltas, then one `Finished`."""
        extra: dict[str, Any] = {}
        if request.params.HasField("temperature"):
            extra["temperature"] = request.params.temperature
        if request.headers:
            extra["extra_headers"] = dict(request.headers)
        # Messages and tools go in `extra_body`, which the SDK sends as given: they are plain
        # JSON already, and its per-field transform of the typed params took 4 ms for a
        # 40-message conversation, a third of the worker's CPU (make bench, py-spy).
        body: dict[str, Any] = {"messages": openai_messages(request.messages)}
        if request.tools:
            body["tools"] = openai_tools(request.tools)
        calls: dict[int, dict[str, str]] = {}
        finish_reason = "stop"
        input_tokens = output_tokens = 0
        response_model = ""
        try:
            # The raw SSE lines, parsed with `json`: building the SDK's pydantic models for
            # every chunk cost about half of a worker's CPU (make bench, py-spy).
            async with self._client.chat.completions.with_streaming_response.create(
                model=request.model,
                messages=(),
                max_completion_tokens=request.params.max_output_tokens or None,
                stream=True,
                stream_options={"include_usage": True},
                extra_body=body,
                **extra,
            ) as response:
                async for chunk in sse_data(response.iter_lines()):
                    if chunk.get("error"):
                        raise openai.APIError(
                            error_message(chunk["error"]),
                            request=response.http_request,
                            body=chunk["error"],
                        )
                    response_model = chunk.get("model") or response_model
                    for choice in chunk.get("choices") or ():
                        delta = choice.get("delta") or {}
                        if content := delta.get("content"):
                            yield TextDelta(content)
                        for part in delta.get("tool_calls") or ():
                            call = calls.setdefault(
                                part.get("index", 0), {"id": "", "name": "", "arguments": ""}
                            )
                            call["id"] = part.get("id") or call["id"]
                            function = part.get("function") or {}
                            call["name"] = function.get("name") or call["name"]
                            call["arguments"] += function.get("arguments") or ""
                        if reason := choice.get("finish_reason"):
                            finish_reason = reason
                    if usage := chunk.get("usage"):
                        input_tokens = usage.get("prompt_tokens", 0)
                        output_tokens = usage.get("completion_tokens", 0)
        except SDK_ERRORS as exc:
            raise classify(self.name, request.model, exc) from exc
        except ValueError as exc:  # a data line that is not a JSON object
            raise ProviderError(
                f"{self.name} {request.model}: unreadable stream: {exc}",
                retryable=True,
                kind="invalid_response",
            ) from exc
        yield Finished(
            OPENAI_FINISH_REASONS.get(finish_reason, finish_reason),
            input_tokens,
            output_tokens,
            tuple(
                ToolCall(id=c["id"], name=c["name"], arguments_json=c["arguments"] or "{}")
                for _, c in sorted(calls.items())
            ),
            response_model,
        )

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._client.close()
