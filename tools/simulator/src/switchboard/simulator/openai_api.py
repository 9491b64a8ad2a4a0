"""The OpenAI wire format: `POST /v1/chat/completions` and `GET /v1/models`.

Shapes, ids and error messages follow what api.openai.com sends, so that the official
`openai` SDK works unchanged with `base_url="http://<host>:<port>/v1"`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from typing import Any

from aiohttp import web

from .controls import Controls, read_controls, retry_after_headers
from .grounded import grounded_opening
from .journal import Journal
from .openai_requests import ChatRequest, parse_chat_request
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

API = "openai"
MODEL_CREATED = 1_700_000_000
MODEL_OWNER = "switchboard-simulator"


NO_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field "
    "(with blank username) if you're accessing the API from your browser and are prompted for "
    "a username and password. You can obtain an API key from "
    "https://platform.openai.com/account/api-keys."
)

_MARKER = "\x00piece\x00"


def error_body(
    message: str,
    *,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> web.Response:
    """An error response in OpenAI's shape."""
    return json_response(
        error_body(message, type_=type_, param=param, code=code),
        status=status,
        headers=_headers(),
    )


def _headers() -> dict[str, str]:
    return {"x-request-id": f"req_{uuid.uuid4().hex}", "openai-version": "2020-10-01"}


def system_fingerprint(model: str) -> str:
    """A stable fingerprint per model, as OpenAI reports the backend configuration."""
    return "fp_" + hashlib.sha256(model.encode()).hexdigest()[:10]


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """OpenAI's usage object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """`POST /v1/chat/completions`."""
    state, body, entry = await read_request(request, API)
    if not bearer_token(request.headers.get("Authorization")):
        Journal.finish(entry, "error 401")
        return error_response(401, NO_KEY_MESSAGE)
    try:
        chat = parse_chat_request(body, context_window=state.settings.context_window)
        assert isinstance(body, dict)
        controls = read_controls(API, body, request.headers, state.settings, state.attempts)
    except InvalidRequest as exc:
        Journal.finish(entry, f"error {exc.status}")
        return error_response(exc.status, exc.message, param=exc.param, code=exc.code)
    entry["fault"] = controls.fault
    entry["attempt"] = controls.attempt
    if controls.fault in ("429", "500"):
        Journal.finish(entry, f"error {controls.fault}")
        return fault_response(controls)

    result = answer(
        chat.model,
        chat.user_text,
        tools=chat.tools,
        choice=chat.tool_choice,
        forced=controls.tool,
        outputs=chat.tool_outputs,
        reply_tokens=controls.reply_tokens,
        max_tokens=chat.max_tokens,
        grounded=grounded_opening(body, chat.user_text),
    )
    if result.calls:
        finish_reason = "tool_calls"
    else:
        assert result.reply is not None
        finish_reason = "length" if result.reply.truncated else "stop"
    base = {
        "id": random_id("chatcmpl-", 29),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": chat.model,
        "service_tier": "default",
        "system_fingerprint": system_fingerprint(chat.model),
    }
    pacing = Pacing(ttft=controls.ttft_s, token_delay=controls.token_delay_s)
    progress = StreamProgress()
    try:
        if not chat.stream:
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
            return json_response(
                _completion(base, result, finish_reason, chat.prompt_tokens), headers=_headers()
            )
        events = _stream_events(base, result, finish_reason, chat)
        return await stream_sse(
            request,
            web.StreamResponse(headers={**SSE_HEADERS, **_headers()}),
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
    """The error an injected `429` or `500` fault answers with, as OpenAI sends it."""
    if controls.fault == "429":
        response = error_response(
            429,
            "Rate limit reached for requests (simulated). Please try again later.",
            type_="requests",
            code="rate_limit_exceeded",
        )
        response.headers.update(retry_after_headers(controls.retry_after_ms))
        return response
    return error_response(
        500,
        "The server had an error while processing your request. Sorry about that! (simulated)",
        type_="server_error",
    )


def _message(result: Answer) -> dict[str, Any]:
    if result.reply is not None:
        return {
            "role": "assistant",
            "content": result.reply.text,
            "refusal": None,
            "annotations": [],
        }
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": random_id("call_", 24),
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json},
            }
            for call in result.calls
        ],
        "refusal": None,
        "annotations": [],
    }


def _completion(
    base: dict[str, Any], result: Answer, finish_reason: str, prompt_tokens: int
) -> dict[str, Any]:
    return {
        **base,
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": _message(result),
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage(prompt_tokens, result.completion_tokens),
    }


def _stream_events(
    base: dict[str, Any], result: Answer, finish_reason: str, chat: ChatRequest
) -> SseEvents:
    """The SSE stream: one `data: <chat.completion.chunk>` event per token, then `[DONE]`.

    Text arrives as `content` deltas; a tool call as a delta with its id and name, then
    its arguments in `tool_calls[].function.arguments` deltas, one per token.
    """
    # Every chunk carries `"usage": null` when usage was asked for, as OpenAI sends it.
    extra: dict[str, Any] = {"usage": None} if chat.include_usage else {}

    def chunk(choices: list[dict[str, Any]], **fields: Any) -> bytes:
        return b"data: " + dumps({**base, "choices": choices, **extra, **fields}).encode() + b"\n\n"

    def choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    tokens: list[bytes] = []
    if result.reply is not None:
        head = chunk([choice({"role": "assistant", "content": "", "refusal": None})])
        prefix, suffix = template(
            {**base, "choices": [choice({"content": _MARKER})], **extra}, _MARKER
        )
        prefix, suffix = b"data: " + prefix, suffix + b"\n\n"
        tokens = [prefix + dumps(piece).encode() + suffix for piece in result.reply.pieces]
    else:
        head = chunk([choice({"role": "assistant", "content": None, "refusal": None})])
        for index, (call, pieces) in enumerate(
            zip(result.calls, result.argument_pieces(), strict=True)
        ):
            start = {
                "index": index,
                "id": random_id("call_", 24),
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            tokens.append(chunk([choice({"tool_calls": [start]})]))
            tokens.extend(
                chunk([choice({"tool_calls": [{"index": index, "function": {"arguments": p}}]})])
                for p in pieces
            )
    tail = chunk([choice({}, finish_reason)])
    if chat.include_usage:
        tail += chunk([], usage=usage(chat.prompt_tokens, result.completion_tokens))
    tail += b"data: [DONE]\n\n"
    return SseEvents(head, tokens, tail)


def model_object(model: str) -> dict[str, Any]:
    """OpenAI's model object."""
    return {"id": model, "object": "model", "created": MODEL_CREATED, "owned_by": MODEL_OWNER}


def list_models(models: tuple[str, ...]) -> web.Response:
    """`GET /v1/models`."""
    return json_response(
        {"object": "list", "data": [model_object(m) for m in models]}, headers=_headers()
    )


def retrieve_model(model: str) -> web.Response:
    """`GET /v1/models/{model}`: every model name is served."""
    return json_response(model_object(model), headers=_headers())
