"""Model providers through their official SDKs, reduced to one streaming interface.

Each provider translates Switchboard's messages and tools into its wire format, streams
text deltas, and ends with one `Finished` carrying the tool calls, the usage and a finish
reason normalized to OpenAI's words ("stop", "length", "tool_calls", "content_filter").
Failures become `ProviderError`s that say whether a retry may help; the SDKs' own retries
are off (`max_retries=0`) because the worker retries itself, the same way for failures
before and in the middle of a stream (see generation.py).
"""

import email.utils
import functools
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import anthropic
import httpx2
import openai
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from switchboard.v1.chat_pb2 import ROLE_ASSISTANT, ROLE_SYSTEM, ROLE_TOOL
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


# Statuses worth retrying: timeouts, conflicts, rate limits and server errors
# (Anthropic's 529 "overloaded" included).
RETRYABLE_STATUSES = frozenset({408, 409, 429})


def _retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUSES or status >= 500


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the provider asked us to wait: `retry-after-ms`, or `retry-after` in seconds
    or as an HTTP date. None when absent or unreadable."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds is not None:
        try:
            return max(float(milliseconds) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def classify(provider: str, model: str, exc: Exception) -> ProviderError:
    """The `ProviderError` for an exception raised by an SDK or its HTTP client."""
    where = f"{provider} {model}"
    if isinstance(exc, openai.APIStatusError | anthropic.APIStatusError):
        status = exc.status_code
        headers = exc.response.headers
        if status < 400:
            # An error event in the middle of a 200 stream (e.g. Anthropic's overloaded_error).
            return ProviderError(f"{where}: {exc}", retryable=True, kind="stream_error")
        kind = "rate_limited" if status == 429 else "server_error" if status >= 500 else "rejected"
        return ProviderError(
            f"{where}: HTTP {status}: {exc.message}",
            retryable=_retryable_status(status),
            kind=kind,
            retry_after_s=retry_after_s(headers),
            status=status,
        )
    timeouts = (openai.APITimeoutError, anthropic.APITimeoutError, httpx2.TimeoutException)
    if isinstance(exc, timeouts):
        return ProviderError(f"{where}: timed out", retryable=True, kind="timeout")
    if isinstance(exc, openai.APIConnectionError | anthropic.APIConnectionError):
        return ProviderError(f"{where}: {exc}", retryable=True, kind="connection")
    if isinstance(exc, httpx2.TransportError):
        return ProviderError(f"{where}: connection lost: {exc}", retryable=True, kind="connection")
    if isinstance(exc, openai.APIResponseValidationError | anthropic.APIResponseValidationError):
        return ProviderError(f"{where}: {exc}", retryable=False, kind="invalid_response")
    if isinstance(exc, openai.APIError | anthropic.APIError):
        # Errors sent inside a stream carry no status: the next attempt may well succeed.
        return ProviderError(f"{where}: {exc}", retryable=True, kind="stream_error")
    return ProviderError(f"{where}: {exc!r}", retryable=False, kind="unexpected")


SDK_ERRORS = (openai.OpenAIError, anthropic.AnthropicError, httpx2.HTTPError)


def tool_schema(spec: ToolSpec) -> dict[str, Any]:
    """The JSON schema of a tool's parameters; an empty object schema when none is given.

    Shared between calls with the same schema text: read it, never change it.
    """
    if not spec.name:
        raise InvalidTaskError("a tool has no name")
    if not spec.parameters_json_schema:
        return {"type": "object", "properties": {}}
    try:
        schema = _parsed_schema(spec.parameters_json_schema)
    except ValueError as exc:
        raise InvalidTaskError(f"tool {spec.name!r}: parameters schema is not JSON: {exc}") from exc
    if not isinstance(schema, dict):
        raise InvalidTaskError(f"tool {spec.name!r}: parameters schema is not a JSON object")
    return schema


# Every task of a tenant carries the same few tools: parsed once (py-spy: 8% of the worker).
@functools.lru_cache(maxsize=256)
def _parsed_schema(text: str) -> Any:
    return json.loads(text)


def _arguments(call: ToolCall) -> dict[str, Any]:
    try:
        arguments = json.loads(call.arguments_json or "{}")
    except ValueError as exc:
        raise InvalidTaskError(f"tool call {call.id!r}: arguments are not JSON: {exc}") from exc
    if not isinstance(arguments, dict):
        raise InvalidTaskError(f"tool call {call.id!r}: arguments are not a JSON object")
    return arguments


OPENAI_FINISH_REASONS = {"function_call": "tool_calls"}
ANTHROPIC_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def openai_messages(messages: Sequence[ChatMessage]) -> list[ChatCompletionMessageParam]:
    """Switchboard messages in Chat Completions form."""
    converted: list[dict[str, Any]] = []
    for message in messages:
        if message.role == ROLE_SYSTEM:
            converted.append({"role": "system", "content": message.text})
        elif message.role == ROLE_ASSISTANT:
            entry: dict[str, Any] = {"role": "assistant", "content": message.text or None}
            if message.tool_calls:
                entry["tool_calls"] = [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments_json or "{}"},
                    }
                    for call in message.tool_calls
                ]
            elif entry["content"] is None:
                entry["content"] = ""
            converted.append(entry)
        elif message.role == ROLE_TOOL:
            if not message.tool_call_id:
                raise InvalidTaskError("a tool message has no tool_call_id")
            converted.append(
                {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.text}
            )
        else:  # users, and an unspecified role, which is the user's
            converted.append({"role": "user", "content": message.text})
    return cast(list[ChatCompletionMessageParam], converted)


def openai_tools(tools: Sequence[ToolSpec]) -> list[ChatCompletionToolParam]:
    """Tool definitions in Chat Completions form."""
    return [
        {
            "type": "function",
            "function": {
                "name": spec.name,
                "description": spec.description,
                "parameters": tool_schema(spec),
            },
        }
        for spec in tools
    ]


def anthropic_messages(messages: Sequence[ChatMessage]) -> tuple[str, list[dict[str, Any]]]:
    """(system prompt, turns) in Messages API form.

    Tool results become `tool_result` blocks of a user turn; consecutive turns of one role
    are merged, as the API expects user and assistant turns to alternate.
    """
    system = "\n\n".join(m.text for m in messages if m.role == ROLE_SYSTEM and m.text)
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == ROLE_SYSTEM:
            continue
        blocks: list[dict[str, Any]] = []
        if message.role == ROLE_ASSISTANT:
            role = "assistant"
            if message.text:
                blocks.append({"type": "text", "text": message.text})
            blocks.extend(
                {"type": "tool_use", "id": call.id, "name": call.name, "input": _arguments(call)}
                for call in message.tool_calls
            )
        elif message.role == ROLE_TOOL:
            if not message.tool_call_id:
                raise InvalidTaskError("a tool message has no tool_call_id")
            role = "user"
            blocks.append(
                {
                    "type": "tool_result",
                    "tool_use_id": message.tool_call_id,
                    "content": message.text,
                }
            )
        else:
            role = "user"
            if message.text:
                blocks.append({"type": "text", "text": message.text})
        if not blocks:
            continue  # the API rejects empty turns
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    # Plain single-text turns as strings, the most widely understood form.
    for turn in turns:
        content = turn["content"]
        if len(content) == 1 and content[0]["type"] == "text":
            turn["content"] = content[0]["text"]
    return system, turns


def anthropic_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Tool definitions in Messages API form."""
    return [
        {"name": spec.name, "description": spec.description, "input_schema": tool_schema(spec)}
        for spec in tools
    ]


# Lines read after `[DONE]` before a stream is let go (servers send none or a blank one).
SSE_DRAIN_MAX_LINES = 16


async def sse_data(lines: AsyncIterator[str]) -> AsyncGenerator[dict[str, Any], None]:
    """The JSON objects of a server-sent event stream's `data` fields, up to `[DONE]`.

    Written out because the SDK's own reader builds a pydantic model per chunk; this keeps
    to the SSE rules that OpenAI-compatible servers use (multi-line data, comments).
    """
    data: list[str] = []
    # A blank line ends an event; the stream's end ends the last one too (an empty line
    # appended, so one path reads both).
    stream = _then_blank(lines)
    async for line in stream:
        if line:
            if line.startswith("data:"):
                data.append(line[6:] if line.startswith("data: ") else line[5:])
            continue  # `event:`, `id:`, `retry:` and `:` comments carry nothing we use
        if not data:
            continue
        payload = "\n".join(data)
        data = []
        if payload.startswith("[DONE]"):
            # Read the body to its end (a few lines at most) so that the connection goes
            # back to the pool: httpx closes one whose body was left unread, and every
            # request then paid for a new TCP connection (50 of 50 in a test).
            drained = 0
            async for _ in stream:
                drained += 1
                if drained >= SSE_DRAIN_MAX_LINES:
                    break
            return
        chunk = json.loads(payload)
        if not isinstance(chunk, dict):
            raise ValueError(f"a data field is not a JSON object: {payload[:80]!r}")
        yield chunk


async def _then_blank(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    async for line in lines:
        yield line
    yield ""


def _error_message(error: Any) -> str:
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) and message else "an error in the stream"


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
                            _error_message(chunk["error"]),
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
