"""The Anthropic wire format: `POST /v1/messages` and `GET /v1/models`.

Shapes, ids, SSE event names and error messages follow what api.anthropic.com sends, so that
the official `anthropic` SDK works unchanged with `base_url="http://<host>:<port>"`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from .anthropic_requests import MessagesRequest, parse_messages_request
from .controls import Controls, read_controls, retry_after_headers
from .grounded import grounded_opening
from .journal import Journal
from .state import read_request
from .tools import Answer, answer
from .wire import (
    SSE_HEADERS,
    InvalidRequest,
    Pacing,
    SseEvents,
    StreamProgress,
    abort_connection,
    bearer_token,
    dumps,
    json_response,
    random_id,
    stream_sse,
    template,
)

API = "anthropic"
MODEL_CREATED_AT = "2025-01-01T00:00:00Z"

NO_KEY_MESSAGE = "x-api-key header is required (or an Authorization: Bearer header)"

_MARKER = "\x00piece\x00"
_PING = b'event: ping\ndata: {"type": "ping"}\n\n'


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
    state, body, entry = await read_request(request, API)
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
        grounded=grounded_opening(body, req.user_text),
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
