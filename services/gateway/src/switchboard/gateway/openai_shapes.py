"""OpenAI's wire shapes: request bodies in, `ChatRequest`s out; `ChatEvent`s in, chunks out.

Pure functions, no I/O: the HTTP edge (http_edge.py) calls them. Switchboard keeps each
conversation on the server, so of a request's messages only the last user message is the
turn; the earlier ones are ignored (the conversation's own history is what the model sees).
"""

import time
from dataclasses import dataclass, field
from typing import Any

import grpc

from switchboard.v1.chat_pb2 import ChatEvent, ChatOptions

# `model` names: a tier, or "switchboard" for the tenant's own policy.
MODELS = {"switchboard": "", "auto": "auto", "cheap": "cheap", "frontier": "frontier"}
_FINISH_REASONS = {"stop": "stop", "length": "length", "blocked": "content_filter"}


class ApiError(Exception):
    """An error in OpenAI's shape: `{"error": {"message", "type", "code", "param"}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "code": self.code,
                "param": self.param,
            }
        }


def invalid(param: str, message: str) -> ApiError:
    """A 400 naming the offending parameter."""
    return ApiError(400, message, code="invalid_value", param=param)


# gRPC status → (HTTP status, OpenAI error type, code).
_STATUS = {
    grpc.StatusCode.UNAUTHENTICATED: (401, "invalid_request_error", "invalid_api_key"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "permission_error", "permission_denied"),
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error", "invalid_value"),
    grpc.StatusCode.NOT_FOUND: (404, "invalid_request_error", "not_found"),
    grpc.StatusCode.FAILED_PRECONDITION: (409, "invalid_request_error", "conversation_busy"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "invalid_request_error", "idempotency_key_reused"),
    grpc.StatusCode.ABORTED: (409, "invalid_request_error", "request_aborted"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error", "rate_limit_exceeded"),
    grpc.StatusCode.UNAVAILABLE: (503, "server_error", "service_unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "server_error", "timeout"),
    grpc.StatusCode.UNIMPLEMENTED: (501, "server_error", "not_implemented"),
    grpc.StatusCode.CANCELLED: (499, "server_error", "cancelled"),
}
# The pipeline's field names (validation.py) as the OpenAI parameters that carry them.
_PARAMS = (
    ("message", "messages"),
    ("user_id", "user"),
    ("conversation_id", "metadata.conversation_id"),
    ("request_id", "Idempotency-Key"),
    ("options.tier", "model"),
    ("options.max_output_tokens", "max_tokens"),
    ("options.temperature", "temperature"),
    ("options.metadata", "metadata"),
)


def api_error(
    code: grpc.StatusCode,
    message: str,
    *,
    retry_after_ms: int | None = None,
    message_param: str = "messages",
) -> ApiError:
    """The HTTP error a gRPC status means; 400s name the parameter, 429s say when to retry."""
    status, type_, error_code = _STATUS.get(code, (500, "server_error", "internal_error"))
    param = None
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        for field_name, openai_param in _PARAMS:
            if message.startswith(field_name + " ") or message.startswith(field_name + "."):
                param = message_param if field_name == "message" else openai_param
                break
    headers: dict[str, str] = {}
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        if "budget" in message:
            error_code = "insufficient_quota"
        if retry_after_ms is not None:
            headers["retry-after"] = str(max(1, -(-retry_after_ms // 1000)))
            headers["retry-after-ms"] = str(retry_after_ms)
    return ApiError(status, message, type_=type_, code=error_code, param=param, headers=headers)


def _text_of(content: Any, param: str) -> str:
    """The text of a message's `content`: a string, or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for index, part in enumerate(content):
            if not isinstance(part, dict):
                raise invalid(f"{param}[{index}]", f"{param}[{index}] must be an object")
            kind = part.get("type")
            if kind not in ("text", "input_text", "output_text"):
                raise invalid(
                    f"{param}[{index}].type",
                    f"only text content is supported; got {kind!r}",
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise invalid(f"{param}[{index}].text", f"{param}[{index}].text must be a string")
            texts.append(text)
        return "".join(texts)
    raise invalid(param, f"{param} must be a string or a list of text parts")


def _optional_number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(name, f"{name} must be a number")
    return float(value)


def _metadata(body: dict[str, Any]) -> dict[str, str]:
    value = body.get("metadata")
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise invalid("metadata", "metadata must be an object of string values")
    return dict(value)


@dataclass
class Turn:
    """What an OpenAI request asks of the pipeline."""

    message: str
    model: str
    options: ChatOptions
    conversation_id: str = ""
    user_id: str = ""
    stream: bool = False
    include_usage: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
    # Who makes a reset right: "client" (it handles the `reset` extension), "edge", or ""
    # (not said in the body: the `sb-resets` header, else "edge"; http_stream.py).
    resets: str = ""


def _common(body: dict[str, Any], max_tokens_names: tuple[str, ...]) -> Turn:
    """The fields Chat Completions and Responses share: model, sampling, metadata, user."""
    model = body.get("model", "switchboard")
    if not isinstance(model, str):
        raise invalid("model", "model must be a string")
    if model not in MODELS:
        raise ApiError(
            404,
            f"the model {model!r} does not exist; use one of {', '.join(MODELS)}",
            code="model_not_found",
            param="model",
        )
    options = ChatOptions(tier=MODELS[model])
    for name in max_tokens_names:
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise invalid(name, f"{name} must be a positive integer")
        options.max_output_tokens = value
    temperature = _optional_number(body, "temperature")
    if temperature is not None:
        options.temperature = temperature
    metadata = _metadata(body)
    conversation_id = metadata.pop("conversation_id", "")
    options.metadata.update(metadata)
    user = body.get("user") or body.get("safety_identifier") or ""
    if not isinstance(user, str):
        raise invalid("user", "user must be a string")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise invalid("stream", "stream must be a boolean")
    return Turn(
        message="",
        model=model,
        options=options,
        conversation_id=conversation_id,
        user_id=user,
        stream=stream,
        metadata=metadata,
    )


def parse_chat_completion(body: dict[str, Any]) -> Turn:
    """A `POST /v1/chat/completions` body as a turn; raises ApiError naming the parameter."""
    if "model" not in body:
        raise invalid("model", "model is required (auto, cheap, frontier or switchboard)")
    turn = _common(body, ("max_completion_tokens", "max_tokens"))
    n = body.get("n")
    if n not in (None, 1):
        raise invalid("n", "n must be 1: Switchboard generates one reply per turn")
    if body.get("tools"):
        raise invalid("tools", "tools are the tenant's, configured on the server; omit tools")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages", "messages must be a non-empty array")
    last = messages[-1]
    index = len(messages) - 1
    if not isinstance(last, dict) or last.get("role") != "user":
        raise invalid(
            f"messages[{index}].role",
            "the last message must be the user's: Switchboard keeps the conversation and "
            "takes the last user message as the turn",
        )
    turn.message = _text_of(last.get("content"), f"messages[{index}].content")
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise invalid("stream_options", "stream_options must be an object")
        turn.include_usage = bool(options.get("include_usage", False))
        resets = options.get("switchboard_resets", "")
        if resets not in ("", "client", "edge"):
            raise invalid(
                "stream_options.switchboard_resets",
                "stream_options.switchboard_resets must be 'client' or 'edge'",
            )
        turn.resets = resets
    return turn


def parse_response_request(body: dict[str, Any]) -> Turn:
    """A `POST /v1/responses` body as a turn; raises ApiError naming the parameter."""
    turn = _common(body, ("max_output_tokens",))
    if body.get("previous_response_id"):
        raise invalid(
            "previous_response_id",
            "previous_response_id is not supported; pass conversation instead",
        )
    if body.get("tools"):
        raise invalid("tools", "tools are the tenant's, configured on the server; omit tools")
    conversation = body.get("conversation")
    if isinstance(conversation, dict):
        conversation = conversation.get("id")
    if conversation is not None:
        if not isinstance(conversation, str):
            raise invalid("conversation", "conversation must be an id or {'id': id}")
        turn.conversation_id = conversation
    items = body.get("input")
    if isinstance(items, str):
        turn.message = items
    elif isinstance(items, list) and items:
        for index in range(len(items) - 1, -1, -1):
            item = items[index]
            if isinstance(item, dict) and item.get("role", "user") == "user":
                turn.message = _text_of(item.get("content"), f"input[{index}].content")
                break
        else:
            raise invalid("input", "input has no user message")
    else:
        raise invalid("input", "input must be a string or a non-empty array of messages")
    return turn


def finish_reason(reason: str) -> str:
    """Switchboard's finish reason as OpenAI's (`handoff` ends like `stop`)."""
    return _FINISH_REASONS.get(reason, "stop")


@dataclass
class Reply:
    """What a reply came to, kept while it streams: the text after the last reset."""

    conversation_id: str = ""
    request_id: str = ""
    text: str = ""
    resets: int = 0
    model: str = ""
    tier: str = ""
    finish_reason: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    tools: list[dict[str, str]] = field(default_factory=list)
    handoff: dict[str, str] | None = None
    error: tuple[str, str] | None = None
    # The knowledge-base documents the answer drew on (`Done.citations`).
    citations: list[dict[str, str]] = field(default_factory=list)
    # Where the generation under way began in `text`: a reset drops only its text, the text
    # before a tool round stays (the orchestrator's final text keeps it too).
    generation_start: int = 0

    def apply(self, event: ChatEvent) -> dict[str, Any] | None:
        """Take one event in; the Switchboard extension it is for clients, if any."""
        kind = event.WhichOneof("event")
        if kind == "started":
            self.conversation_id = event.started.conversation_id
            self.request_id = event.started.request_id
            return {
                "type": "started",
                "conversation_id": self.conversation_id,
                "request_id": self.request_id,
            }
        if kind == "delta":
            self.text += event.delta.text
            return None
        if kind == "tool":
            self.generation_start = len(self.text)
            tool = {"name": event.tool.name, "status": event.tool.status}
            self.tools.append(tool)
            return {"type": "tool", **tool}
        if kind == "reset":
            self.text = self.text[: self.generation_start]
            self.resets += 1
            return {"type": "reset", "reason": event.reset.reason}
        if kind == "handoff":
            self.handoff = {"reason": event.handoff.reason, "ticket_id": event.handoff.ticket_id}
            return {"type": "handoff", **self.handoff}
        if kind == "done":
            done = event.done
            self.model, self.tier = done.model, done.tier
            self.finish_reason = done.finish_reason
            self.input_tokens = done.usage.input_tokens
            self.output_tokens = done.usage.output_tokens
            self.cost_usd = done.cost_usd
            self.citations = [
                {
                    "document_id": c.document_id,
                    "title": c.title,
                    "source_url": c.source_url,
                    "snippet": c.snippet,
                }
                for c in done.citations
            ]
            extension: dict[str, Any] = {
                "type": "done",
                "model": self.model,
                "tier": self.tier,
                "finish_reason": self.finish_reason,
                "cost_usd": self.cost_usd,
                "citations": self.citations,
                "resets": self.resets,
            }
            if self.resets:
                # The whole final text, for a client that could not unsay the earlier one.
                extension["content"] = self.text
            return extension
        if kind == "error":
            self.error = (event.error.code, event.error.message)
            return None
        return None

    def extension(self) -> dict[str, Any]:
        """The `switchboard` object of a whole (non-streamed) answer."""
        out: dict[str, Any] = {
            "conversation_id": self.conversation_id,
            "request_id": self.request_id,
            "tier": self.tier,
            "finish_reason": self.finish_reason,
            "cost_usd": self.cost_usd,
            "resets": self.resets,
            "tools": self.tools,
            "citations": self.citations,
        }
        if self.handoff is not None:
            out["handoff"] = self.handoff
        return out

    def usage_chat(self) -> dict[str, int]:
        """Usage in Chat Completions' shape."""
        return {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
        }

    def usage_responses(self) -> dict[str, Any]:
        """Usage in the Responses API's shape."""
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.input_tokens + self.output_tokens,
        }


def completion_id(conversation_id: str) -> str:
    """A completion's id carries its conversation's: `chatcmpl-<conversation id>`."""
    return f"chatcmpl-{conversation_id}"


def chunk(
    reply: Reply,
    created: int,
    model: str,
    *,
    delta: dict[str, Any] | None = None,
    finish: str | None = None,
    extension: dict[str, Any] | None = None,
    include_usage: bool = False,
) -> dict[str, Any]:
    """One `chat.completion.chunk` with a single choice (an extension rides on an empty one)."""
    body: dict[str, Any] = {
        "id": completion_id(reply.conversation_id),
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}],
    }
    if include_usage:
        body["usage"] = None
    if extension is not None:
        body["switchboard"] = extension
    return body


def completion(reply: Reply, model: str) -> dict[str, Any]:
    """A whole `chat.completion`."""
    return {
        "id": completion_id(reply.conversation_id),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": reply.model or model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason(reply.finish_reason),
            }
        ],
        "usage": reply.usage_chat(),
        "switchboard": reply.extension(),
    }


def response_object(
    reply: Reply, model: str, created: int, status: str, metadata: dict[str, str]
) -> dict[str, Any]:
    """A `response` object of the Responses API."""
    output: list[dict[str, Any]] = []
    if status == "completed":
        output.append(output_message(reply, "completed"))
    body: dict[str, Any] = {
        "id": f"resp_{reply.request_id}",
        "object": "response",
        "created_at": created,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "model": reply.model or model,
        "output": output,
        "parallel_tool_calls": False,
        "tool_choice": "auto",
        "tools": [],
        "temperature": None,
        "top_p": None,
        "metadata": metadata,
        "conversation": {"id": reply.conversation_id},
        "usage": reply.usage_responses() if status == "completed" else None,
        "switchboard": reply.extension(),
    }
    if reply.error is not None:
        body["error"] = {"code": reply.error[0].lower(), "message": reply.error[1]}
    return body


def output_message(reply: Reply, status: str) -> dict[str, Any]:
    """The assistant message item of a response."""
    return {
        "id": f"msg_{reply.request_id}",
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": reply.text, "annotations": []}]
        if status == "completed"
        else [],
    }
