"""What every route of the HTTP door shares: header names, JSON bodies, refusals as
OpenAI-shaped errors, and Server-Sent Events."""

import json
from typing import Any, NoReturn

import grpc
from aiohttp import web

from switchboard.gateway.core import Refused
from switchboard.gateway.openai_shapes import ApiError, api_error
from switchboard.gateway.quotas import retry_after_ms

SESSION_HEADER = "sb-session"
CONVERSATION_HEADER = "sb-conversation-id"
REQUEST_HEADER = "sb-request-id"
IDEMPOTENCY_HEADER = "sb-idempotency"
CORS_ALLOW_HEADERS = ", ".join(
    (
        "authorization",
        "content-type",
        "idempotency-key",
        CONVERSATION_HEADER,
        SESSION_HEADER,
        "sb-resets",  # http_stream.RESETS_HEADER (the widget handles `reset` itself)
    )
)
CORS_EXPOSE_HEADERS = ", ".join(
    (CONVERSATION_HEADER, REQUEST_HEADER, IDEMPOTENCY_HEADER, "retry-after", "retry-after-ms")
)


class RefusingContext:
    """What `ConversationMethods` aborts through: here, an abort raises `Refused`."""

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> NoReturn:
        raise Refused(code, details)


def refused(exc: Refused, message_param: str = "messages") -> ApiError:
    """A pipeline refusal as an HTTP error (429s say when to retry)."""
    delay = retry_after_ms(exc.refusal) if exc.refusal is not None else None
    return api_error(exc.code, exc.message, retry_after_ms=delay, message_param=message_param)


def event_error(code: str, message: str) -> ApiError:
    """A reply's `error` event (a gRPC status name and a message) as an HTTP error."""
    status = grpc.StatusCode.__members__.get(code, grpc.StatusCode.INTERNAL)
    return api_error(status, message)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object ({} when empty); 400 `invalid_json` otherwise."""
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object", code="invalid_json")
    return body


async def read_json(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; over the app's `client_max_size` it is a 413."""
    return parse_json_object(await request.read())


def sse(data: dict[str, Any], event: str | None = None) -> bytes:
    """One Server-Sent Event."""
    line = b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"
    return (f"event: {event}\n".encode() + line) if event else line


async def open_event_stream(request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
    """Send the status line and headers of an event stream."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # proxies must not hold the stream back
            **headers,
        }
    )
    await response.prepare(request)
    return response
