"""The Anthropic wire format: `POST /v1/messages` and `GET /v1/models`.

Shapes, ids, SSE event names and error messages follow what api.anthropic.com sends, so that
the official `anthropic` SDK works unchanged with `base_url="http://<host>:<port>"`.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .controls import Controls, read_controls, retry_after_headers
from .grounded import grounded_opening
from .journal import Journal
from .replies import count_prompt_tokens, generate_reply
from .state import STATE_KEY
from .tools import Answer, OfferedTool, ToolOutput, answer
from .wire import (
    SSE_HEADERS,
    UNPARSABLE,
    InvalidRequest,
    Pacing,
    SseEvents,
    StreamProgress,
    abort_connection,
    bearer_token,
    decode_json,
    dumps,
    is_int,
    json_response,
    random_id,
    stream_sse,
    template,
)

API = "anthropic"
MODEL_CREATED_AT = "2025-01-01T00:00:00Z"

UNPARSABLE_MESSAGE = "There was an error parsing the body of your request: it is not valid JSON."
NO_KEY_MESSAGE = "x-api-key header is required (or an Authorization: Bearer header)"

_MARKER = "\x00piece\x00"
_PING = b'event: ping\ndata: {"type": "ping"}\n\n'


@dataclass(frozen=True, slots=True)
class MessagesRequest:
    """The parts of a valid Messages request that shape the reply."""

    model: str
    stream: bool
    max_tokens: int
    input_tokens: int
    user_text: str
    """Text of the last user message: it seeds the reply."""
    tools: tuple[OfferedTool, ...] = ()
    tool_choice: str = "auto"
    """"auto", "none", "required" (Anthropic's "any") or the name of the tool to call."""
    tool_outputs: tuple[ToolOutput, ...] = ()
    """The tool results of the last user message, if it carries any."""


def parse_messages_request(body: object, *, context_window: int) -> MessagesRequest:
    """Validate a Messages request body as Anthropic does; raise `InvalidRequest`."""
    if body is UNPARSABLE:
        raise InvalidRequest(UNPARSABLE_MESSAGE)
    if not isinstance(body, dict):
        raise InvalidRequest("Input should be a valid dictionary")
    model = _required(body, "model")
    if not isinstance(model, str):
        raise _invalid("model", "Input should be a valid string")
    max_tokens = _required(body, "max_tokens")
    if not is_int(max_tokens):
        raise _invalid("max_tokens", "Input should be a valid integer")
    assert isinstance(max_tokens, int)
    if max_tokens < 1:
        raise _invalid("max_tokens", "Input should be greater than or equal to 1")
    messages = _required(body, "messages")
    if not isinstance(messages, list):
        raise _invalid("messages", "Input should be a valid list")
    if not messages:
        raise _invalid("messages", "at least one message is required")

    prompt: list[list[str]] = []
    system = body.get("system")
    if system is not None:
        if isinstance(system, str):
            prompt.append([system])
        elif isinstance(system, list):
            prompt.append(_blocks_text("system", system))
        else:
            raise _invalid("system", "Input should be a valid string or a list of text blocks")
    user_text = ""
    for index, message in enumerate(messages):
        role, texts = _parse_message(index, message)
        prompt.append([role, *texts])
        if role == "user" and not _tool_results(message):
            user_text = "\n".join(texts)
    tools = _parse_tools(body.get("tools"))
    tool_choice = _parse_tool_choice(body.get("tool_choice"), tools)
    if tools:
        prompt.append([dumps(body["tools"])])

    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid("stream", "Input should be a valid boolean")

    try:
        input_tokens = count_prompt_tokens(prompt)
    except ValueError:  # a text too long for the tokenizer
        input_tokens = context_window + 1
    if input_tokens > context_window:
        raise InvalidRequest(
            f"prompt is too long: {input_tokens} tokens > {context_window} maximum"
        )
    return MessagesRequest(
        model=model,
        stream=bool(stream),
        max_tokens=max_tokens,
        input_tokens=input_tokens,
        user_text=user_text,
        tools=tools,
        tool_choice=tool_choice,
        tool_outputs=_tool_outputs(messages),
    )


_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")


def _parse_tools(tools: object) -> tuple[OfferedTool, ...]:
    if tools is None:
        return ()
    if not isinstance(tools, list):
        raise _invalid("tools", "Input should be a valid list")
    offered = []
    for index, tool in enumerate(tools):
        where = f"tools.{index}"
        if not isinstance(tool, dict):
            raise _invalid(where, "Input should be a valid dictionary")
        if tool.get("type") not in (None, "custom"):
            continue  # server tools (web search ...) are accepted and never called
        name = _required(tool, "name", where=f"{where}.")
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise _invalid(f"{where}.name", "String should match pattern '^[a-zA-Z0-9_-]{1,128}$'")
        schema = _required(tool, "input_schema", where=f"{where}.")
        if not isinstance(schema, dict):
            raise _invalid(f"{where}.input_schema", "Input should be a valid dictionary")
        description = tool.get("description")
        offered.append(
            OfferedTool(name, schema, description if isinstance(description, str) else "")
        )
    return tuple(offered)


def _parse_tool_choice(choice: object, tools: tuple[OfferedTool, ...]) -> str:
    if choice is None:
        return "auto"
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind in ("auto", "none"):
        assert isinstance(kind, str)
        return kind
    if kind == "any":
        return "required"
    if kind == "tool":
        assert isinstance(choice, dict)
        name = choice.get("name")
        if not isinstance(name, str):
            raise _invalid("tool_choice.tool.name", "Field required")
        if name not in {tool.name for tool in tools}:
            raise InvalidRequest(f"tool_choice: tool {name!r} is not among the tools")
        return name
    raise _invalid(
        "tool_choice", "Input tag should be one of 'auto', 'any', 'tool', 'none' (field 'type')"
    )


def _tool_results(message: object) -> list[dict[str, Any]]:
    """The `tool_result` blocks of a message."""
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        return []
    return [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]


def _tool_outputs(messages: list[Any]) -> tuple[ToolOutput, ...]:
    """The tool results of the last message, named after the calls they answer."""
    results = _tool_results(messages[-1])
    if not results:
        return ()
    names: dict[str, str] = {}
    if len(messages) > 1 and isinstance(content := messages[-2].get("content"), list):
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_use":
                names[str(block.get("id"))] = str(block.get("name") or "")
    outputs = []
    for result in results:
        content = result.get("content")
        if isinstance(content, list):
            content = " ".join(
                str(block.get("text", "")) for block in content if isinstance(block, dict)
            )
        text = "" if content is None else str(content)
        outputs.append(ToolOutput(names.get(str(result.get("tool_use_id")), ""), text))
    return tuple(outputs)


def _parse_message(index: int, message: object) -> tuple[str, list[str]]:
    """Role and the texts of a message's content."""
    where = f"messages.{index}"
    if not isinstance(message, dict):
        raise _invalid(where, "Input should be a valid dictionary")
    role = _required(message, "role", where=f"{where}.")
    if role == "system":
        raise _invalid(
            f"{where}.role",
            'Unexpected role "system". The Messages API accepts a top-level `system` '
            'parameter, not "system" as an input message role.',
        )
    if role not in ("user", "assistant"):
        raise _invalid(f"{where}.role", "Input should be 'user' or 'assistant'")
    assert isinstance(role, str)
    content = _required(message, "content", where=f"{where}.")
    if isinstance(content, str):
        return role, [content]
    if isinstance(content, list):
        return role, _blocks_text(f"{where}.content", content)
    raise _invalid(f"{where}.content", "Input should be a valid string or a list of blocks")


def _blocks_text(where: str, blocks: list[Any]) -> list[str]:
    """The texts carried by content blocks (text, tool use and tool results)."""
    texts: list[str] = []
    for index, block in enumerate(blocks):
        at = f"{where}.{index}"
        if not isinstance(block, dict):
            raise _invalid(at, "Input should be a valid dictionary")
        kind = _required(block, "type", where=f"{at}.")
        if kind == "text":
            text = _required(block, "text", where=f"{at}.")
            if not isinstance(text, str):
                raise _invalid(f"{at}.text", "Input should be a valid string")
            texts.append(text)
        elif kind == "tool_use":
            name = block.get("name")
            if isinstance(name, str):
                texts.append(name)
            if "input" in block:
                texts.append(json.dumps(block["input"]))
        elif kind == "tool_result":
            result = block.get("content")
            if isinstance(result, str):
                texts.append(result)
            elif isinstance(result, list):
                texts.extend(_blocks_text(f"{at}.content", result))
        # images, documents, thinking: accepted, not counted
    return texts


def _required(body: dict[str, Any], key: str, *, where: str = "") -> object:
    value = body.get(key)
    if value is None:
        raise _invalid(where + key, "Field required")
    return value


def _invalid(field: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {problem}", param=field)


def _request_id() -> str:
    return random_id("req_011C", 20)


def error_body(message: str, *, type_: str = "invalid_request_error") -> dict[str, Any]:
    """Anthropic's error object."""
    return {
        "type": "error",
        "error": {"type": type_, "message": message},
        "request_id": _request_id(),
    }


def error_response(
    status: int, message: str, *, type_: str = "invalid_request_error"
) -> web.Response:
    """An error response in Anthropic's shape."""
    body = error_body(message, type_=type_)
    return json_response(body, status=status, headers={"request-id": str(body["request_id"])})


def usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    """Anthropic's usage object."""
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _has_key(request: web.Request) -> bool:
    # The SDK sends its key as `x-api-key` or, in recent versions, as a bearer token.
    key = request.headers.get("x-api-key", "").strip()
    return bool(key or bearer_token(request.headers.get("Authorization")))


async def messages(request: web.Request) -> web.StreamResponse:
    """`POST /v1/messages`."""
    state = request.app[STATE_KEY]
    body = decode_json(await request.read())
    entry = state.journal.record(
        method=request.method,
        path=request.path,
        api=API,
        headers=request.headers,
        body=None if body is UNPARSABLE else body,
    )
    if not _has_key(request):
        Journal.finish(entry, "error 401")
        return error_response(401, NO_KEY_MESSAGE, type_="authentication_error")
    try:
        req = parse_messages_request(body, context_window=state.settings.context_window)
        assert isinstance(body, dict)
        controls = read_controls(API, body, request.headers, state.settings, state.attempts)
    except InvalidRequest as exc:
        Journal.finish(entry, f"error {exc.status}")
        return error_response(exc.status, exc.message)
    entry["fault"] = controls.fault
    entry["attempt"] = controls.attempt
    if controls.fault in ("429", "500"):
        Journal.finish(entry, f"error {controls.fault}")
        return fault_response(controls)

    result = answer(
        req.model,
        req.user_text,
        tools=req.tools,
        choice=req.tool_choice,
        forced=controls.tool,
        outputs=req.tool_outputs,
        reply_tokens=controls.reply_tokens,
        max_tokens=req.max_tokens,
    )
    opening = None if req.tool_outputs else grounded_opening(body, req.user_text)
    if opening is not None and not result.calls:
        result = Answer(
            generate_reply(
                req.model,
                req.user_text,
                reply_tokens=controls.reply_tokens,
                max_tokens=req.max_tokens,
                opening=opening,
            )
        )
    if result.calls:
        stop_reason = "tool_use"
    else:
        assert result.reply is not None
        stop_reason = "max_tokens" if result.reply.truncated else "end_turn"
    message_id = random_id("msg_01", 22)
    headers = {"request-id": _request_id()}
    pacing = Pacing(ttft=controls.ttft_s, token_delay=controls.token_delay_s)
    progress = StreamProgress()
    try:
        if not req.stream:
            if controls.fault == "hang":
                progress.outcome = "fault_hang"
                await asyncio.Event().wait()  # until the client gives up
            if controls.fault == "disconnect":
                progress.outcome = "fault_disconnect"
                abort_connection(request)
                return web.Response()
            delay = pacing.total(result.completion_tokens)
            if delay > 0:
                await asyncio.sleep(delay)
            progress.outcome = "completed"
            return json_response(_message(message_id, req, result, stop_reason), headers=headers)
        events = _stream_events(message_id, req, result, stop_reason)
        return await stream_sse(
            request,
            web.StreamResponse(headers={**SSE_HEADERS, **headers}),
            events,
            pacing,
            fault=controls.stream_fault(len(events.tokens)),
            progress=progress,
        )
    except asyncio.CancelledError:
        progress.outcome = "client_disconnected"
        raise
    finally:
        Journal.finish(entry, progress.outcome, progress.tokens_sent)


def fault_response(controls: Controls) -> web.Response:
    """The error an injected `429` or `500` fault answers with, as Anthropic sends it."""
    if controls.fault == "429":
        response = error_response(
            429,
            "Number of request tokens has exceeded your rate limit (simulated).",
            type_="rate_limit_error",
        )
        response.headers.update(retry_after_headers(controls.retry_after_ms))
        return response
    return error_response(500, "Internal server error (simulated)", type_="api_error")


def _content(result: Answer) -> list[dict[str, Any]]:
    if result.reply is not None:
        return [{"type": "text", "text": result.reply.text}]
    return [
        {
            "type": "tool_use",
            "id": random_id("toolu_01", 22),
            "name": call.name,
            "input": call.arguments,
        }
        for call in result.calls
    ]


def _message(
    message_id: str, req: MessagesRequest, result: Answer, stop_reason: str
) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": req.model,
        "content": _content(result),
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage(req.input_tokens, result.completion_tokens),
    }


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {dumps(payload)}\n\n".encode()


def _block_start(index: int, block: dict[str, Any]) -> bytes:
    return _event(
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": block},
    )


def _block_stop(index: int) -> bytes:
    return _event("content_block_stop", {"type": "content_block_stop", "index": index})


def _stream_events(
    message_id: str, req: MessagesRequest, result: Answer, stop_reason: str
) -> SseEvents:
    """The SSE stream, with event names and order exactly as Anthropic sends them.

    Text is one `text` block of `text_delta`s; each tool call is a `tool_use` block whose
    input arrives as `input_json_delta`s, one per token.
    """
    start: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": req.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        # Anthropic reports one output token at the start of a stream.
        "usage": usage(req.input_tokens, 1),
    }
    head = _event("message_start", {"type": "message_start", "message": start})
    tokens: list[bytes] = []
    tail = b""
    if result.reply is not None:
        head += _block_start(0, {"type": "text", "text": ""}) + _PING
        prefix, suffix = template(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": _MARKER},
            },
            _MARKER,
        )
        prefix, suffix = b"event: content_block_delta\ndata: " + prefix, suffix + b"\n\n"
        tokens = [prefix + dumps(piece).encode() + suffix for piece in result.reply.pieces]
        tail = _block_stop(0)
    else:
        head += _PING
        for index, (call, pieces) in enumerate(
            zip(result.calls, result.argument_pieces(), strict=True)
        ):
            block = {
                "type": "tool_use",
                "id": random_id("toolu_01", 22),
                "name": call.name,
                "input": {},
            }
            deltas = [
                _event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    },
                )
                for piece in pieces
            ]
            # The block's start and stop travel with its first and last token.
            deltas[0] = _block_start(index, block) + deltas[0]
            deltas[-1] += _block_stop(index)
            tokens.extend(deltas)
    final_usage = usage(req.input_tokens, result.completion_tokens)
    del final_usage["service_tier"]  # message_delta carries cumulative counts only
    tail += _event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": final_usage,
        },
    ) + _event("message_stop", {"type": "message_stop"})
    return SseEvents(head, tokens, tail)


def model_info(model: str) -> dict[str, Any]:
    """Anthropic's model object."""
    return {
        "type": "model",
        "id": model,
        "display_name": model,
        "created_at": MODEL_CREATED_AT,
        "lifecycle": "active",
    }


def list_models(models: tuple[str, ...]) -> web.Response:
    """`GET /v1/models`: the whole list in one page."""
    return json_response(
        {
            "data": [model_info(m) for m in models],
            "has_more": False,
            "first_id": models[0] if models else None,
            "last_id": models[-1] if models else None,
        },
        headers={"request-id": _request_id()},
    )


def retrieve_model(model: str) -> web.Response:
    """`GET /v1/models/{model}`: every model name is served."""
    return json_response(model_info(model), headers={"request-id": _request_id()})
