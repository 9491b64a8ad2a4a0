"""`POST /v1/responses`: OpenAI's Responses API over the same turns as Chat Completions."""

import contextlib
import time
from typing import Any

from aiohttp import web

from switchboard.gateway.core import Refused
from switchboard.gateway.http_auth import HttpAuth
from switchboard.gateway.http_chat import Turns
from switchboard.gateway.http_common import open_event_stream, read_json, sse
from switchboard.gateway.openai_shapes import (
    Reply,
    output_message,
    parse_response_request,
    response_object,
)


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
            sequence = 0

            async def send(kind: str, **fields: Any) -> None:
                nonlocal sequence
                await response.write(
                    sse({"type": kind, "sequence_number": sequence, **fields}, kind)
                )
                sequence += 1

            def snapshot(status: str) -> dict[str, Any]:
                return response_object(reply, turn.model, created, status, turn.metadata)

            item_id = f"msg_{reply.request_id}"
            text_at = {"item_id": item_id, "output_index": 0, "content_index": 0}
            await send("response.created", response=snapshot("in_progress"))
            await send("response.in_progress", response=snapshot("in_progress"))
            await send(
                "response.output_item.added",
                output_index=0,
                item=output_message(reply, "in_progress"),
            )
            await send(
                "response.content_part.added",
                **text_at,
                part={"type": "output_text", "text": "", "annotations": []},
            )
            try:
                async for event in events:
                    extension = reply.apply(event)
                    kind = event.WhichOneof("event")
                    if kind == "delta":
                        await send(
                            "response.output_text.delta",
                            **text_at,
                            delta=event.delta.text,
                            logprobs=[],
                        )
                    elif kind == "error":
                        await send("response.failed", response=snapshot("failed"))
                        return response
                    elif kind == "done":
                        part = {"type": "output_text", "text": reply.text, "annotations": []}
                        await send(
                            "response.output_text.done", **text_at, text=reply.text, logprobs=[]
                        )
                        await send("response.content_part.done", **text_at, part=part)
                        await send(
                            "response.output_item.done",
                            output_index=0,
                            item=output_message(reply, "completed"),
                        )
                        await send("response.completed", response=snapshot("completed"))
                    elif extension is not None:
                        await send(f"response.switchboard.{extension.pop('type')}", **extension)
            except Refused as exc:
                reply.error = (exc.code.name, exc.message)
                await send("response.failed", response=snapshot("failed"))
            return response
