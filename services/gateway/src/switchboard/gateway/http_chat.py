"""`POST /v1/chat/completions` and `GET /v1/models`, and the turn plumbing the Responses API
shares: admitting a turn through `ChatCore` and collecting a whole reply."""

import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

from aiohttp import web

from switchboard.gateway.browser import SessionStoreUnavailableError
from switchboard.gateway.core import ChatCore, Refused
from switchboard.gateway.http_auth import Caller, HttpAuth
from switchboard.gateway.http_common import (
    CONVERSATION_HEADER,
    IDEMPOTENCY_HEADER,
    REQUEST_HEADER,
    event_error,
    open_event_stream,
    read_json,
    refused,
    sse,
)
from switchboard.gateway.http_stream import (
    EventStream,
    StreamOptions,
    TextGate,
    client_handles_resets,
    diverged_error,
)
from switchboard.gateway.openai_shapes import (
    MODELS,
    ApiError,
    Reply,
    Turn,
    chunk,
    completion,
    finish_reason,
    parse_chat_completion,
)
from switchboard.v1.chat_pb2 import ChatEvent, ChatRequest

log = logging.getLogger(__name__)


class Turns:
    """Runs one turn through the core, as the gRPC door does."""

    def __init__(
        self, core: ChatCore, auth: HttpAuth, stream_options: StreamOptions | None = None
    ) -> None:
        self._core = core
        self._auth = auth
        self.stream_options = stream_options or StreamOptions()

    def gate(self, reply: Reply, headers: dict[str, str], handles_resets: bool) -> TextGate:
        """The text gate of a streamed reply: a replayed one is held whole (it is all there)."""
        return TextGate(
            reply,
            self.stream_options,
            client_handles_resets=handles_resets,
            hold_whole=headers.get(IDEMPOTENCY_HEADER) == "replayed",
        )

    async def start(
        self, request: web.Request, caller: Caller, turn: Turn, message_param: str
    ) -> tuple[AsyncGenerator[ChatEvent, None], ChatEvent, dict[str, str]]:
        """Admit the turn through the core; returns its events, the first one, and headers.
        Every refusal happens here, before a status line is sent."""
        conversation_id = turn.conversation_id or request.headers.get(CONVERSATION_HEADER, "")
        if conversation_id:
            await self._auth.require_own(caller, "conversation", conversation_id)
        user_id = caller.session.user_id if caller.session is not None else turn.user_id
        chat_request = ChatRequest(
            conversation_id=conversation_id,
            message=turn.message,
            user_id=user_id,
            request_id=request.headers.get("Idempotency-Key", ""),
            options=turn.options,
        )
        mode = {"value": "new"}

        async def admitted(how: str) -> None:
            mode["value"] = how

        events = self._core.chat(caller.tenant, chat_request, on_admitted=admitted)
        try:
            first = await anext(events)
        except Refused as exc:
            await events.aclose()
            raise refused(exc, message_param) from None
        except BaseException:
            await events.aclose()
            raise
        started = first.started
        if caller.session is not None and first.WhichOneof("event") == "started":
            sessions = self._auth.sessions
            try:
                if not conversation_id:
                    await sessions.claim(caller.session, "conversation", started.conversation_id)
                await sessions.claim(caller.session, "request", started.request_id)
            except SessionStoreUnavailableError as exc:
                log.warning("session ownership not recorded: %s", exc)
        headers = {
            CONVERSATION_HEADER: started.conversation_id,
            REQUEST_HEADER: started.request_id or first.request_id,
            IDEMPOTENCY_HEADER: mode["value"],
        }
        return events, first, headers

    @staticmethod
    async def whole(
        events: AsyncGenerator[ChatEvent, None],
        reply: Reply,
        headers: dict[str, str],
        render: Callable[[], dict[str, Any]],
    ) -> web.Response:
        """Collect a reply and answer it whole (the text after the last reset)."""
        async for event in events:
            reply.apply(event)
        if reply.error is not None:
            error = event_error(*reply.error)
            return web.json_response(
                error.body(), status=error.status, headers={**headers, **error.headers}
            )
        return web.json_response(render(), headers=headers)


class ChatCompletionRoutes:
    """OpenAI's Chat Completions API and its model list."""

    def __init__(self, auth: HttpAuth, turns: Turns) -> None:
        self._auth = auth
        self._turns = turns

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/chat/completions", self._chat_completions)
        router.add_get("/v1/models", self._models)
        router.add_get("/v1/models/{model}", self._model)

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        caller = await self._auth.caller(request, browser_ok=True)
        turn = parse_chat_completion(await read_json(request))
        handles_resets = client_handles_resets(request, turn.resets)
        events, first, headers = await self._turns.start(request, caller, turn, "messages")
        reply = Reply()
        started = reply.apply(first)
        async with contextlib.aclosing(events):
            if not turn.stream:
                return await self._turns.whole(
                    events, reply, headers, lambda: completion(reply, turn.model)
                )
            response = await open_event_stream(request, headers)
            gate = self._turns.gate(reply, headers, handles_resets)
            created = int(time.time())

            def piece(**kwargs: Any) -> bytes:
                return sse(
                    chunk(
                        reply,
                        created,
                        reply.model or turn.model,
                        **kwargs,
                        include_usage=turn.include_usage,
                    )
                )

            def text(content: str) -> bytes:
                return piece(delta={"content": content}) if content else b""

            def on(event: ChatEvent) -> bytes:
                """The bytes one reply event sends."""
                extension = reply.apply(event)
                out = text(gate.after(event))
                kind = event.WhichOneof("event")
                if kind == "error":
                    return sse(event_error(*reply.error or ("", "")).body())
                if kind == "done":
                    if gate.diverged:
                        return diverged_error(reply)
                    out += piece(finish=finish_reason(reply.finish_reason), extension=extension)
                    if turn.include_usage:
                        usage = chunk(reply, created, reply.model or turn.model)
                        usage["choices"] = []
                        usage["usage"] = reply.usage_chat()
                        out += sse(usage)
                    return out + b"data: [DONE]\n\n"
                if extension is not None and (kind != "reset" or handles_resets):
                    out += piece(extension=extension)
                return out

            stream = EventStream(
                response,
                self._turns.stream_options.keepalive_s,
                deadline=lambda: gate.hold_deadline,
                at_deadline=lambda: text(gate.give_out()),
            )
            await stream.send(
                lambda: piece(delta={"role": "assistant", "content": ""}, extension=started)
            )
            try:
                async for event in events:
                    deadline = gate.hold_deadline
                    await stream.send(lambda: on(event))  # noqa: B023 (called at once)
                    if gate.hold_deadline != deadline:
                        stream.poke()
            except Refused as exc:
                error = sse(refused(exc).body())
                await stream.send(lambda: error)
            finally:
                await stream.close()
            return response

    async def _models(self, request: web.Request) -> web.Response:
        await self._auth.caller(request, browser_ok=True)
        return web.json_response(
            {"object": "list", "data": [self._model_object(name) for name in MODELS]}
        )

    async def _model(self, request: web.Request) -> web.Response:
        await self._auth.caller(request, browser_ok=True)
        name = request.match_info["model"]
        if name not in MODELS:
            raise ApiError(
                404, f"the model {name!r} does not exist", code="model_not_found", param="model"
            )
        return web.json_response(self._model_object(name))

    @staticmethod
    def _model_object(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 0, "owned_by": "switchboard"}
