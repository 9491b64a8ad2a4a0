"""Helpers shared by the two wire formats: request errors, JSON, ids, SSE pacing."""

from __future__ import annotations

import asyncio
import json
import random
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
}

_ID_ALPHABET = string.ascii_letters + string.digits
# Ids need to be unique, not secret: the module-level PRNG is several times faster.
_rng = random.Random()


class InvalidRequest(Exception):
    """A request the provider rejects; each wire format renders it in its own error shape."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int = 400,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status


class _Unparsable:
    """Marks a body that is not JSON (distinct from a JSON `null`)."""

    def __repr__(self) -> str:
        return "UNPARSABLE"


UNPARSABLE = _Unparsable()


def decode_json(raw: bytes) -> object:
    """The JSON value of a request body, or `UNPARSABLE`."""
    try:
        value: object = json.loads(raw)
    except ValueError:  # also covers UnicodeDecodeError
        return UNPARSABLE
    return value


def dumps(value: object) -> str:
    """Compact JSON, as the providers put on the wire."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def json_response(value: object, *, status: int = 200, headers: dict[str, str]) -> web.Response:
    """A JSON response with the provider's headers."""
    return web.Response(
        body=dumps(value).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def json_type_name(value: object) -> str:
    """How a JSON value's type is named in error messages ("a string", "an array" ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def is_int(value: object) -> bool:
    """True for a JSON integer (a JSON boolean is not one, unlike in Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def random_id(prefix: str, length: int) -> str:
    """A unique, provider-looking id such as `chatcmpl-<29 letters or digits>`."""
    return prefix + "".join(_rng.choices(_ID_ALPHABET, k=length))


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header ("" when there is none)."""
    if not authorization:
        return ""
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def template(obj: object, marker: str) -> tuple[bytes, bytes]:
    """Split the compact JSON of `obj` around the string `marker`.

    Lets a per-token event be written as prefix + JSON string + suffix, without serializing
    the whole event again for each token.
    """
    prefix, found, suffix = dumps(obj).rpartition(dumps(marker))
    if not found:
        raise ValueError("marker not found in template")
    return prefix.encode(), suffix.encode()


@dataclass(frozen=True, slots=True)
class Pacing:
    """When tokens go out: the first after `ttft` seconds, then one every `token_delay`."""

    ttft: float
    token_delay: float

    def total(self, tokens: int) -> float:
        """Seconds a whole reply of `tokens` tokens takes to generate."""
        return self.ttft + self.token_delay * max(tokens - 1, 0)


@dataclass(frozen=True, slots=True)
class SseEvents:
    """A whole SSE stream, already framed: what precedes the first token, one event per
    token, and what follows the last."""

    head: bytes
    tokens: Sequence[bytes]
    tail: bytes


@dataclass(frozen=True, slots=True)
class StreamFault:
    """A fault injected into a stream after `after` token events."""

    kind: Literal["hang", "disconnect"]
    after: int


@dataclass(slots=True)
class StreamProgress:
    """What a stream did, for the journal."""

    tokens_sent: int = 0
    outcome: str = "running"


async def stream_sse(
    request: web.Request,
    response: web.StreamResponse,
    events: SseEvents,
    pacing: Pacing,
    *,
    fault: StreamFault | None = None,
    progress: StreamProgress | None = None,
) -> web.StreamResponse:
    """Send the head at once, each token on the pacing schedule, then the tail, and close.

    With no delays the whole stream goes out in one write. A client that goes away
    mid-stream ends the generation quietly, as it does with a real provider. A `fault`
    stops the stream after some tokens: `hang` sends nothing more (until the client gives
    up), `disconnect` drops the connection.
    """
    progress = progress if progress is not None else StreamProgress()
    head, tokens, tail = events.head, events.tokens, events.tail
    await response.prepare(request)
    try:
        if fault is None and pacing.ttft <= 0 and pacing.token_delay <= 0:
            await response.write_eof(b"".join([head, *tokens, tail]))
            progress.tokens_sent = len(tokens)
            progress.outcome = "completed"
            return response
        await response.write(head)
        if fault is None and pacing.token_delay <= 0:
            await asyncio.sleep(pacing.ttft)
            await response.write_eof(b"".join([*tokens, tail]))
            progress.tokens_sent = len(tokens)
            progress.outcome = "completed"
            return response
        loop = asyncio.get_running_loop()
        # Deadlines from one start time, so that time spent writing does not add up as drift.
        start = loop.time() + pacing.ttft
        for index, event in enumerate(tokens):
            if fault is not None and index >= fault.after:
                return await _inject(request, response, fault, progress)
            wait = start + index * pacing.token_delay - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await response.write(event)
            progress.tokens_sent += 1
        if fault is not None:
            return await _inject(request, response, fault, progress)
        await response.write_eof(tail)
        progress.outcome = "completed"
    except ConnectionResetError:
        progress.outcome = "client_disconnected"
    except asyncio.CancelledError:
        # aiohttp cancels the handler when its client goes away.
        progress.outcome = "client_disconnected"
        raise
    return response


async def _inject(
    request: web.Request,
    response: web.StreamResponse,
    fault: StreamFault,
    progress: StreamProgress,
) -> web.StreamResponse:
    if fault.kind == "hang":
        progress.outcome = "fault_hang"
        await asyncio.Event().wait()  # until the client gives up and the handler is cancelled
    progress.outcome = "fault_disconnect"
    abort_connection(request)
    return response


def abort_connection(request: web.Request) -> None:
    """Drop the client's connection at once, without ending the HTTP response."""
    transport = request.transport
    if transport is not None:
        transport.abort()
