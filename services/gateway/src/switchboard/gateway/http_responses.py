"""`POST /v1/responses`: OpenAI's Responses API over the same turns as Chat Completions."""

import contextlib
import time
from typing import Any

from aiohttp import web

from switchboard.gateway.core import Refused
from switchboard.gateway.http_auth import HttpAuth
from switchboard.gateway.http_chat import Turns
from switchboard.gateway.http_common import open_event_stream, read_json, sse
from switchboard.gateway.http_stream import (
    DIVERGED,
    EventStream,
    client_handles_resets,
    diverged_message,
)
from switchboard.gateway.openai_shapes import (
    Reply,
    output_message,
    parse_response_request,
    response_object,
)
from switchboard.v1.chat_pb2 import ChatEvent


class ResponseRoutes:
    """The Responses API: a whole `response`, or its stream of typed events."""

    def __init__(self, auth: HttpAuth, turns: Turns) -> None:
        self._auth = auth
        self._turns = turns

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/responses", self._responses)

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        caller = await self._auth.caller(request, browser_ok=True)
        body = await read_json(request)
        turn = parse_response_request(body)
        handles_resets = client_handles_resets(request, "")
        events, first, headers = await self._turns.start(request, caller, turn, "input")
        reply = Reply()
        reply.apply(first)
        created = int(time.time())
        async with contextlib.aclosing(events):
            if not turn.stream:
                return await self._turns.whole(
                    events,
                    reply,
                    headers,
                    lambda: response_object(reply, turn.model, created, "completed", turn.metadata),
                )
            response = await open_event_stream(request, headers)
            gate = self._turns.gate(reply, headers, handles_resets)
            sequence = 0

            def event_bytes(kind: str, **fields: Any) -> bytes:
                nonlocal sequence
                sequence += 1
                return sse({"type": kind, "sequence_number": sequence - 1, **fields}, kind)

            def snapshot(status: str) -> dict[str, Any]:
                return response_object(reply, turn.model, created, status, turn.metadata)

            item_id = f"msg_{reply.request_id}"
            text_at = {"item_id": item_id, "output_index": 0, "content_index": 0}

            def text(delta: str) -> bytes:
                if not delta:
                    return b""
                return event_bytes(
                    "response.output_text.delta", **text_at, delta=delta, logprobs=[]
                )

            def failed() -> bytes:
                return event_bytes("response.failed", response=snapshot("failed"))

            def on(event: ChatEvent) -> bytes:
                """The bytes one reply event sends."""
                extension = reply.apply(event)
                out = text(gate.after(event))
                kind = event.WhichOneof("event")
                if kind == "error":
                    return failed()
                if kind == "done":
                    if gate.diverged:
                        failure = snapshot("failed")
                        failure["error"] = {"code": DIVERGED, "message": diverged_message(reply)}
                        failure["switchboard"]["content"] = reply.text
                        return event_bytes("response.failed", response=failure)
                    part = {"type": "output_text", "text": reply.text, "annotations": []}
                    return (
                        out
                        + event_bytes(
                            "response.output_text.done", **text_at, text=reply.text, logprobs=[]
                        )
                        + event_bytes("response.content_part.done", **text_at, part=part)
                        + event_bytes(
                            "response.output_item.done",
                            output_index=0,
                            item=output_message(reply, "completed"),
                        )
                        + event_bytes("response.completed", response=snapshot("completed"))
                    )
                if extension is not None and (kind != "reset" or handles_resets):
                    out += event_bytes(f"response.switchboard.{extension.pop('type')}", **extension)
                return out

            stream = EventStream(
                response,
                self._turns.stream_options.keepalive_s,
                deadline=lambda: gate.hold_deadline,
                at_deadline=lambda: text(gate.give_out()),
            )
            await stream.send(
                lambda: (
                    event_bytes("response.created", response=snapshot("in_progress"))
                    + event_bytes("response.in_progress", response=snapshot("in_progress"))
                    + event_bytes(
                        "response.output_item.added",
                        output_index=0,
                        item=output_message(reply, "in_progress"),
                    )
                    + event_bytes(
                        "response.content_part.added",
                        **text_at,
                        part={"type": "output_text", "text": "", "annotations": []},
                    )
                )
            )
            try:
                async for event in events:
                    deadline = gate.hold_deadline
                    await stream.send(lambda: on(event))  # noqa: B023 (called at once)
                    if gate.hold_deadline != deadline:
                        stream.poke()
            except Refused as exc:
                reply.error = (exc.code.name, exc.message)
                await stream.send(failed)
            finally:
                await stream.close()
            return response
