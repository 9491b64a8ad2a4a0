"""The Anthropic wire format: `POST /v1/messages` and `GET /v1/models`.

Shapes, ids, SSE event names and error messages follow what api.anthropic.com sends, so that
the official `anthropic` SDK works unchanged with `base_url="http://<host>:<port>"`.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .replies import Reply, count_prompt_tokens, generate_reply
from .state import STATE_KEY
from .wire import (
    SSE_HEADERS,
    UNPARSABLE,
    InvalidRequest,
    SseEvents,
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
        if role == "user":
            user_text = "\n".join(texts)

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
    )


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
    state.journal.record(
        method=request.method,
        path=request.path,
        api=API,
        headers=request.headers,
        body=None if body is UNPARSABLE else body,
    )
    if not _has_key(request):
        return error_response(401, NO_KEY_MESSAGE, type_="authentication_error")
    try:
        req = parse_messages_request(body, context_window=state.settings.context_window)
    except InvalidRequest as exc:
        return error_response(exc.status, exc.message)

    reply = generate_reply(
        req.model,
        req.user_text,
        reply_tokens=state.settings.reply_tokens,
        max_tokens=req.max_tokens,
    )
    stop_reason = "max_tokens" if reply.truncated else "end_turn"
    message_id = random_id("msg_01", 22)
    headers = {"request-id": _request_id()}
    if not req.stream:
        delay = state.pacing.total(reply.completion_tokens)
        if delay > 0:
            await asyncio.sleep(delay)
        return json_response(_message(message_id, req, reply, stop_reason), headers=headers)

    return await stream_sse(
        request,
        web.StreamResponse(headers={**SSE_HEADERS, **headers}),
        _stream_events(message_id, req, reply, stop_reason),
        state.pacing,
    )


def _message(
    message_id: str, req: MessagesRequest, reply: Reply, stop_reason: str
) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": req.model,
        "content": [{"type": "text", "text": reply.text}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage(req.input_tokens, reply.completion_tokens),
    }


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {dumps(payload)}\n\n".encode()


def _stream_events(
    message_id: str, req: MessagesRequest, reply: Reply, stop_reason: str
) -> SseEvents:
    """The SSE stream, with event names and order exactly as Anthropic sends them."""
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
    head = (
        _event("message_start", {"type": "message_start", "message": start})
        + _event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
        + _PING
    )
    prefix, suffix = template(
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": _MARKER},
        },
        _MARKER,
    )
    prefix, suffix = b"event: content_block_delta\ndata: " + prefix, suffix + b"\n\n"
    tokens = [prefix + dumps(piece).encode() + suffix for piece in reply.pieces]
    final_usage = usage(req.input_tokens, reply.completion_tokens)
    del final_usage["service_tier"]  # message_delta carries cumulative counts only
    tail = (
        _event("content_block_stop", {"type": "content_block_stop", "index": 0})
        + _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": final_usage,
            },
        )
        + _event("message_stop", {"type": "message_stop"})
    )
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
