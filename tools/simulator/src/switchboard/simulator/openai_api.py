"""The OpenAI wire format: `POST /v1/chat/completions` and `GET /v1/models`.

Shapes, ids and error messages follow what api.openai.com sends, so that the official
`openai` SDK works unchanged with `base_url="http://<host>:<port>/v1"`.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import uuid
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
    json_type_name,
    random_id,
    stream_sse,
    template,
)

API = "openai"
MODEL_CREATED = 1_700_000_000
MODEL_OWNER = "switchboard-simulator"

_ROLES = ("system", "assistant", "user", "function", "tool", "developer")
_ROLES_TEXT = "'system', 'assistant', 'user', 'function', 'tool', and 'developer'"
# Roles whose messages may omit `content` (a tool call carries no text).
_CONTENT_OPTIONAL = ("assistant", "function")

UNPARSABLE_MESSAGE = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON. If you have trouble figuring out how to fix this, please contact "
    "us through our help center at help.openai.com.)"
)
NO_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field "
    "(with blank username) if you're accessing the API from your browser and are prompted for "
    "a username and password. You can obtain an API key from "
    "https://platform.openai.com/account/api-keys."
)

_MARKER = "\x00piece\x00"


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """The parts of a valid chat completion request that shape the reply."""

    model: str
    stream: bool
    include_usage: bool
    max_tokens: int | None
    prompt_tokens: int
    user_text: str
    """Text of the last user message: it seeds the reply."""
    tools: tuple[OfferedTool, ...] = ()
    tool_choice: str = "auto"
    """"auto", "none", "required" or the name of the function to call."""
    tool_outputs: tuple[ToolOutput, ...] = ()
    """The tool results the conversation ends with, if it does."""


def parse_chat_request(body: object, *, context_window: int) -> ChatRequest:
    """Validate a chat completion request body as OpenAI does; raise `InvalidRequest`."""
    if body is UNPARSABLE:
        raise InvalidRequest(UNPARSABLE_MESSAGE)
    if not isinstance(body, dict):
        raise _invalid_type("body", "an object", body)
    model = body.get("model")
    if model is None or model == "":
        raise InvalidRequest("you must provide a model parameter")
    if not isinstance(model, str):
        raise _invalid_type("model", "a string", model)
    messages = body.get("messages")
    if messages is None:
        raise _missing("messages")
    if not isinstance(messages, list):
        raise _invalid_type("messages", "an array", messages)
    if not messages:
        raise InvalidRequest(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            param="messages",
            code="empty_array",
        )

    prompt: list[list[str]] = []
    named = 0
    user_text = ""
    for index, message in enumerate(messages):
        role, strings, texts, has_name = _parse_message(index, message)
        prompt.append(strings)
        named += has_name
        if role == "user":
            user_text = "\n".join(texts)
    tools = _parse_tools(body.get("tools"))
    tool_choice = _parse_tool_choice(body.get("tool_choice"), tools)
    if tools:
        prompt.append([dumps(body["tools"])])

    stream = _optional_bool(body, "stream")
    include_usage = False
    options = body.get("stream_options")
    if options is not None:
        if not stream:
            raise InvalidRequest(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param="stream_options",
            )
        if not isinstance(options, dict):
            raise _invalid_type("stream_options", "an object", options)
        include_usage = _optional_bool(options, "include_usage", where="stream_options.")

    # `max_tokens` is the older name of `max_completion_tokens`; the newer one wins.
    max_tokens = _optional_positive_int(body, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = _optional_positive_int(body, "max_tokens")
    n = _optional_positive_int(body, "n")
    if n is not None and n != 1:
        raise InvalidRequest(
            f"Invalid 'n': the simulator generates one choice, but got {n}.",
            param="n",
            code="unsupported_value",
        )

    try:
        prompt_tokens = count_prompt_tokens(prompt, named=named)
    except ValueError:  # a text too long for the tokenizer
        prompt_tokens = context_window + 1
    if prompt_tokens > context_window:
        raise InvalidRequest(
            f"This model's maximum context length is {context_window} tokens. However, your "
            f"messages resulted in {prompt_tokens} tokens. Please reduce the length of the "
            "messages.",
            param="messages",
            code="context_length_exceeded",
        )
    return ChatRequest(
        model=model,
        stream=stream,
        include_usage=include_usage,
        max_tokens=max_tokens,
        prompt_tokens=prompt_tokens,
        user_text=user_text,
        tools=tools,
        tool_choice=tool_choice,
        tool_outputs=_trailing_tool_outputs(messages),
    )


_FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def _parse_tools(tools: object) -> tuple[OfferedTool, ...]:
    if tools is None:
        return ()
    if not isinstance(tools, list):
        raise _invalid_type("tools", "an array", tools)
    offered = []
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise _invalid_type(where, "an object", tool)
        if tool.get("type") != "function":
            raise InvalidRequest(
                f"Invalid value for '{where}.type': expected 'function', got {tool.get('type')!r}.",
                param=f"{where}.type",
                code="invalid_value",
            )
        function = tool.get("function")
        if not isinstance(function, dict):
            raise _missing(f"{where}.function")
        name = function.get("name")
        if not isinstance(name, str):
            raise _missing(f"{where}.function.name")
        if not _FUNCTION_NAME.match(name):
            raise InvalidRequest(
                f"Invalid '{where}.function.name': string does not match pattern. Expected a "
                "string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                param=f"{where}.function.name",
                code="invalid_value",
            )
        parameters = function.get("parameters", {})
        if not isinstance(parameters, dict):
            raise _invalid_type(f"{where}.function.parameters", "an object", parameters)
        description = function.get("description")
        offered.append(
            OfferedTool(name, parameters, description if isinstance(description, str) else "")
        )
    return tuple(offered)


def _parse_tool_choice(choice: object, tools: tuple[OfferedTool, ...]) -> str:
    if choice is None:
        return "auto"
    if not tools:
        raise InvalidRequest(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
            "specified.",
            param="tool_choice",
        )
    if choice in ("none", "auto", "required"):
        assert isinstance(choice, str)
        return choice
    function = choice.get("function") if isinstance(choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    is_function = isinstance(choice, dict) and choice.get("type") == "function"
    if not (is_function and isinstance(name, str)):
        raise InvalidRequest(
            "Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or "
            '{"type": "function", "function": {"name": ...}}.',
            param="tool_choice",
            code="invalid_value",
        )
    if name not in {tool.name for tool in tools}:
        raise InvalidRequest(
            f"Invalid value for 'tool_choice': no function named {name!r} was specified in "
            "the 'tools' parameter.",
            param="tool_choice",
            code="invalid_value",
        )
    return name


def _trailing_tool_outputs(messages: list[Any]) -> tuple[ToolOutput, ...]:
    """The `tool` messages that end the conversation, named after the calls they answer."""
    trailing: list[dict[str, Any]] = []
    index = len(messages) - 1
    while index >= 0 and messages[index].get("role") == "tool":
        trailing.insert(0, messages[index])
        index -= 1
    if not trailing:
        return ()
    names: dict[str, str] = {}
    if index >= 0 and isinstance(calls := messages[index].get("tool_calls"), list):
        for call in calls:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(call.get("id"), str):
                names[call["id"]] = str(function.get("name") or "")
    outputs = []
    for message in trailing:
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(
                str(part.get("text", "")) for part in content if isinstance(part, dict)
            )
        outputs.append(ToolOutput(names.get(message.get("tool_call_id", ""), ""), str(content)))
    return tuple(outputs)


def _parse_message(index: int, message: object) -> tuple[str, list[str], list[str], bool]:
    """Role, strings that count as prompt tokens, text of the content, whether named."""
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise _invalid_type(where, "an object", message)
    role = message.get("role")
    if role is None:
        raise _missing(f"{where}.role")
    if role not in _ROLES:
        raise InvalidRequest(
            f"Invalid value for '{where}.role': {role!r}. Supported values are: {_ROLES_TEXT}.",
            param=f"{where}.role",
            code="invalid_value",
        )
    assert isinstance(role, str)
    texts: list[str] = []
    content = message.get("content")
    if content is None:
        if role not in _CONTENT_OPTIONAL:
            raise _missing(f"{where}.content")
    elif isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for part_index, part in enumerate(content):
            texts.extend(_content_part_text(f"{where}.content[{part_index}]", part))
    else:
        raise _invalid_type(f"{where}.content", "one of a string or array of objects", content)
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise _missing(f"{where}.tool_call_id")

    strings = [role, *texts]
    name = message.get("name")
    if isinstance(name, str):
        strings.append(name)
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        for call in tool_calls:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                strings.extend(
                    value
                    for key in ("name", "arguments")
                    if isinstance(value := function.get(key), str)
                )
    return role, strings, texts, isinstance(name, str)


def _content_part_text(where: str, part: object) -> list[str]:
    if not isinstance(part, dict):
        raise _invalid_type(where, "an object", part)
    kind = part.get("type")
    if not isinstance(kind, str):
        raise _missing(f"{where}.type")
    if kind in ("text", "refusal"):
        text = part.get(kind)
        if not isinstance(text, str):
            raise _missing(f"{where}.{kind}")
        return [text]
    return []  # images, audio, files: accepted, not counted


def _optional_bool(body: dict[str, Any], key: str, *, where: str = "") -> bool:
    value = body.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _invalid_type(where + key, "a boolean", value)
    return value


def _optional_positive_int(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not is_int(value):
        raise _invalid_type(key, "an integer", value)
    assert isinstance(value, int)
    if value < 1:
        raise InvalidRequest(
            f"Invalid '{key}': integer below minimum value. Expected a value >= 1, "
            f"but got {value} instead.",
            param=key,
            code="integer_below_min_value",
        )
    return value


def _missing(param: str) -> InvalidRequest:
    return InvalidRequest(
        f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def _invalid_type(param: str, expected: str, value: object) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid type for '{param}': expected {expected}, but got {json_type_name(value)} "
        "instead.",
        param=param,
        code="invalid_type",
    )


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
    state = request.app[STATE_KEY]
    body = decode_json(await request.read())
    entry = state.journal.record(
        method=request.method,
        path=request.path,
        api=API,
        headers=request.headers,
        body=None if body is UNPARSABLE else body,
    )
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
    )
    opening = None if chat.tool_outputs else grounded_opening(body, chat.user_text)
    if opening is not None and not result.calls:
        result = Answer(
            generate_reply(
                chat.model,
                chat.user_text,
                reply_tokens=controls.reply_tokens,
                max_tokens=chat.max_tokens,
                opening=opening,
            )
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
