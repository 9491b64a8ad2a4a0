"""The HTTP door: an OpenAI-compatible API and the web chat widget, over the same `ChatCore`.

aiohttp serves it in the gateway's own event loop, beside grpc.aio (docs/decisions/0030).
Every turn goes through `ChatCore.chat`, the pipeline the gRPC door uses: the same auth,
validation, idempotency (the `Idempotency-Key` header is the request id), quotas, locks,
publishing and reply routing. This module only translates: OpenAI's bodies to `ChatRequest`s
(openai_shapes.py), reply events to Server-Sent Events or whole answers, refusals to errors in
OpenAI's shape. docs/http-api.md is the reference.

Two kinds of callers: a secret key (`Authorization: Bearer <api key>`, servers only: a call
carrying an `Origin` header, i.e. from a browser, is refused) and a publishable widget key
(`pk-...`) with a browser session (`sb-session`), which may only chat and read or rate its
own conversations, from the tenant's allowed origins.
"""

import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol, TypeVar

import grpc
from aiohttp import web
from pymongo.errors import PyMongoError

from switchboard.common.tenants import TenantConfig
from switchboard.gateway.auth import bearer_key
from switchboard.gateway.browser import (
    BrowserSession,
    BrowserSessions,
    SessionStoreUnavailableError,
)
from switchboard.gateway.conversations import ConversationMethods, id_problem
from switchboard.gateway.core import ChatCore, Refused
from switchboard.gateway.directory import DirectoryUnavailableError
from switchboard.gateway.openai_shapes import (
    MODELS,
    ApiError,
    Reply,
    Turn,
    api_error,
    chunk,
    completion,
    finish_reason,
    invalid,
    output_message,
    parse_chat_completion,
    parse_response_request,
    response_object,
)
from switchboard.gateway.quotas import retry_after_ms
from switchboard.v1.chat_pb2 import (
    RATING_DOWN,
    RATING_UP,
    ROLE_ASSISTANT,
    ROLE_USER,
    ChatEvent,
    ChatRequest,
    DeleteConversationRequest,
    GetConversationRequest,
    SubmitFeedbackRequest,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

WEB_DIR = Path(__file__).parent / "web"
SESSION_HEADER = "sb-session"
CONVERSATION_HEADER = "sb-conversation-id"
REQUEST_HEADER = "sb-request-id"
IDEMPOTENCY_HEADER = "sb-idempotency"
PUBLISHABLE_PREFIXES = ("pk-", "pk_")
_CORS_ALLOW_HEADERS = ", ".join(
    ("authorization", "content-type", "idempotency-key", CONVERSATION_HEADER, SESSION_HEADER)
)
_CORS_EXPOSE_HEADERS = ", ".join(
    (CONVERSATION_HEADER, REQUEST_HEADER, IDEMPOTENCY_HEADER, "retry-after", "retry-after-ms")
)


class PublishableKeys(Protocol):
    """Finds the tenant of a publishable key (the MongoDB `TenantStore` in production)."""

    async def by_publishable_key(self, key: str) -> TenantConfig | None: ...


@dataclass(frozen=True)
class Caller:
    """Who calls: a tenant, and for a publishable key the browser session."""

    tenant: TenantConfig
    session: BrowserSession | None = None


class _RefusingContext:
    """What `ConversationMethods` aborts through: here, an abort raises `Refused`."""

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> NoReturn:
        raise Refused(code, details)


def _refused(exc: Refused, message_param: str = "messages") -> ApiError:
    delay = retry_after_ms(exc.refusal) if exc.refusal is not None else None
    return api_error(exc.code, exc.message, retry_after_ms=delay, message_param=message_param)


def _event_error(code: str, message: str) -> ApiError:
    status = grpc.StatusCode.__members__.get(code, grpc.StatusCode.INTERNAL)
    return api_error(status, message)


def _sse(data: dict[str, Any], event: str | None = None) -> bytes:
    line = b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"
    return (f"event: {event}\n".encode() + line) if event else line


async def _open_event_stream(request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
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


class HttpEdge:
    """The aiohttp application of the HTTP door."""

    def __init__(
        self,
        *,
        core: ChatCore,
        conversations: ConversationMethods | None,
        publishable_keys: PublishableKeys,
        sessions: BrowserSessions,
        max_body_bytes: int,
        demo_widget_key: str = "",
    ) -> None:
        self._core = core
        self._conversations = conversations
        self._keys = publishable_keys
        self._sessions = sessions
        self._max_body_bytes = max_body_bytes
        self._demo_widget_key = demo_widget_key

    def app(self) -> web.Application:
        """The routes, the error middleware and CORS."""
        app = web.Application(client_max_size=self._max_body_bytes, middlewares=[self._errors])
        app.on_response_prepare.append(self._cors_headers)
        routes = app.router
        routes.add_post("/v1/chat/completions", self._chat_completions)
        routes.add_post("/v1/responses", self._responses)
        routes.add_get("/v1/models", self._models)
        routes.add_get("/v1/models/{model}", self._model)
        routes.add_post("/v1/conversations", self._create_conversation)
        routes.add_get("/v1/conversations/{id}", self._get_conversation)
        routes.add_get("/v1/conversations/{id}/items", self._conversation_items)
        routes.add_delete("/v1/conversations/{id}", self._delete_conversation)
        routes.add_post("/v1/feedback", self._feedback)
        routes.add_post("/v1/widget/sessions", self._create_session)
        routes.add_get("/widget.js", self._widget)
        routes.add_get("/", self._demo_page)
        return app

    # ---- plumbing ---------------------------------------------------------------------

    @web.middleware
    async def _errors(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Every failure becomes an error in OpenAI's shape; nothing leaks as a bare 500.
        CORS preflights of the API are answered here, for every path."""
        if request.method == "OPTIONS" and request.path.startswith("/v1/"):
            return await self._preflight(request)
        try:
            return await handler(request)
        except ApiError as exc:
            return web.json_response(exc.body(), status=exc.status, headers=exc.headers)
        except Refused as exc:
            error = _refused(exc)
            return web.json_response(error.body(), status=error.status, headers=error.headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
            error = ApiError(
                exc.status,
                f"the request body is larger than {self._max_body_bytes} bytes"
                if exc.status == 413
                else exc.reason,
                code=code.get(exc.status),
            )
            return web.json_response(error.body(), status=exc.status)
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            error = ApiError(500, "internal error", type_="server_error", code="internal_error")
            return web.json_response(error.body(), status=500)

    async def _cors_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        """Echo the origin on the API: a browser call is refused unless its key allows the
        origin (publishable keys) and secret keys refuse every browser call, so a response a
        browser may read never carries data for another origin."""
        origin = request.headers.get("Origin")
        if origin and request.path.startswith("/v1/"):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = _CORS_EXPOSE_HEADERS
            response.headers["Vary"] = "Origin"

    async def _preflight(self, request: web.Request) -> web.Response:
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
                "Access-Control-Allow-Headers": _CORS_ALLOW_HEADERS,
                "Access-Control-Max-Age": "600",
            },
        )

    async def _body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()  # raises 413 above client_max_size
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object", code="invalid_json")
        return body

    async def _caller(self, request: web.Request, *, browser_ok: bool) -> Caller:
        """Authenticate: a secret key, or a publishable key with its browser session."""
        authorization = request.headers.get("Authorization", "")
        key = bearer_key([("authorization", authorization)])
        origin = request.headers.get("Origin")
        if key is None:
            raise ApiError(
                401,
                "missing API key: send Authorization: Bearer <key>",
                code="invalid_api_key",
            )
        if not key.startswith(PUBLISHABLE_PREFIXES):
            if origin is not None:
                raise ApiError(
                    403,
                    "secret API keys must not be used from a browser; "
                    "use a publishable widget key there",
                    type_="permission_error",
                    code="secret_key_in_browser",
                )
            try:
                return Caller(await self._core.authenticate([("authorization", authorization)]))
            except Refused as exc:
                raise _refused(exc) from None
        if not browser_ok:
            raise ApiError(
                403,
                "a publishable key may only chat and read its own conversation",
                type_="permission_error",
                code="publishable_key_not_allowed",
            )
        tenant = await self._publishable_tenant(key)
        if origin is not None and origin not in tenant.allowed_origins:
            raise ApiError(
                403,
                f"origin {origin} is not allowed for this key",
                type_="permission_error",
                code="origin_not_allowed",
            )
        token = request.headers.get(SESSION_HEADER, "")
        if not token:
            raise ApiError(
                401,
                f"a publishable key needs a session: POST /v1/widget/sessions, then send "
                f"its token in the {SESSION_HEADER} header",
                code="session_required",
            )
        session = await self._session_call(self._sessions.get(token))
        if session is None or session.tenant_id != tenant.tenant_id:
            raise ApiError(401, "the session is unknown or expired", code="session_expired")
        return Caller(tenant, session)

    async def _publishable_tenant(self, key: str) -> TenantConfig:
        try:
            tenant = await self._keys.by_publishable_key(key)
        except (PyMongoError, TimeoutError) as exc:
            log.warning("publishable key lookup failed: %s", exc)
            raise ApiError(
                503,
                "the tenant store is unreachable",
                type_="server_error",
                code="service_unavailable",
            ) from exc
        if tenant is None:
            raise ApiError(401, "unknown publishable key", code="invalid_api_key")
        return tenant

    async def _session_call(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except SessionStoreUnavailableError as exc:
            raise ApiError(503, str(exc), type_="server_error", code="service_unavailable") from exc

    async def _require_own(self, caller: Caller, kind: str, object_id: str) -> None:
        """A session may touch only what it started: anything else is simply not found."""
        if caller.session is None:
            return
        if not await self._session_call(self._sessions.owns(caller.session, kind, object_id)):
            raise ApiError(404, f"{kind} {object_id!r} not found", code="not_found")

    # ---- turns --------------------------------------------------------------------------

    async def _start_turn(
        self, request: web.Request, caller: Caller, turn: Turn, message_param: str
    ) -> tuple[AsyncGenerator[ChatEvent, None], ChatEvent, dict[str, str]]:
        """Admit the turn through the core; returns its events, the first one, and headers.
        Every refusal happens here, before a status line is sent."""
        conversation_id = turn.conversation_id or request.headers.get(CONVERSATION_HEADER, "")
        if conversation_id:
            await self._require_own(caller, "conversation", conversation_id)
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
            raise _refused(exc, message_param) from None
        except BaseException:
            await events.aclose()
            raise
        started = first.started
        if caller.session is not None and first.WhichOneof("event") == "started":
            try:
                if not conversation_id:
                    await self._sessions.claim(
                        caller.session, "conversation", started.conversation_id
                    )
                await self._sessions.claim(caller.session, "request", started.request_id)
            except SessionStoreUnavailableError as exc:
                log.warning("session ownership not recorded: %s", exc)
        headers = {
            CONVERSATION_HEADER: started.conversation_id,
            REQUEST_HEADER: started.request_id or first.request_id,
            IDEMPOTENCY_HEADER: mode["value"],
        }
        return events, first, headers

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        caller = await self._caller(request, browser_ok=True)
        turn = parse_chat_completion(await self._body(request))
        events, first, headers = await self._start_turn(request, caller, turn, "messages")
        reply = Reply()
        started = reply.apply(first)
        async with contextlib.aclosing(events):
            if not turn.stream:
                return await self._whole(
                    events, reply, headers, lambda: completion(reply, turn.model)
                )
            response = await _open_event_stream(request, headers)
            created = int(time.time())

            def piece(**kwargs: Any) -> bytes:
                return _sse(
                    chunk(
                        reply,
                        created,
                        reply.model or turn.model,
                        **kwargs,
                        include_usage=turn.include_usage,
                    )
                )

            await response.write(
                piece(delta={"role": "assistant", "content": ""}, extension=started)
            )
            try:
                async for event in events:
                    extension = reply.apply(event)
                    kind = event.WhichOneof("event")
                    if kind == "delta":
                        await response.write(piece(delta={"content": event.delta.text}))
                    elif kind == "error":
                        await response.write(_sse(_event_error(*reply.error or ("", "")).body()))
                        return response
                    elif kind == "done":
                        await response.write(
                            piece(finish=finish_reason(reply.finish_reason), extension=extension)
                        )
                        if turn.include_usage:
                            usage = chunk(reply, created, reply.model or turn.model)
                            usage["choices"] = []
                            usage["usage"] = reply.usage_chat()
                            await response.write(_sse(usage))
                        await response.write(b"data: [DONE]\n\n")
                    elif extension is not None:
                        await response.write(piece(extension=extension))
            except Refused as exc:
                await response.write(_sse(_refused(exc).body()))
            return response

    async def _whole(
        self,
        events: AsyncGenerator[ChatEvent, None],
        reply: Reply,
        headers: dict[str, str],
        render: Callable[[], dict[str, Any]],
    ) -> web.Response:
        """Collect a reply and answer it whole (the text after the last reset)."""
        async for event in events:
            reply.apply(event)
        if reply.error is not None:
            error = _event_error(*reply.error)
            return web.json_response(
                error.body(), status=error.status, headers={**headers, **error.headers}
            )
        return web.json_response(render(), headers=headers)

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        caller = await self._caller(request, browser_ok=True)
        body = await self._body(request)
        turn = parse_response_request(body)
        events, first, headers = await self._start_turn(request, caller, turn, "input")
        reply = Reply()
        reply.apply(first)
        created = int(time.time())
        async with contextlib.aclosing(events):
            if not turn.stream:
                return await self._whole(
                    events,
                    reply,
                    headers,
                    lambda: response_object(reply, turn.model, created, "completed", turn.metadata),
                )
            response = await _open_event_stream(request, headers)
            sequence = 0

            async def send(kind: str, **fields: Any) -> None:
                nonlocal sequence
                await response.write(
                    _sse({"type": kind, "sequence_number": sequence, **fields}, kind)
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

    # ---- models, conversations, feedback, sessions -------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        await self._caller(request, browser_ok=True)
        return web.json_response(
            {"object": "list", "data": [self._model_object(name) for name in MODELS]}
        )

    async def _model(self, request: web.Request) -> web.Response:
        await self._caller(request, browser_ok=True)
        name = request.match_info["model"]
        if name not in MODELS:
            raise ApiError(
                404, f"the model {name!r} does not exist", code="model_not_found", param="model"
            )
        return web.json_response(self._model_object(name))

    @staticmethod
    def _model_object(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 0, "owned_by": "switchboard"}

    def _conversation_id(self, request: web.Request) -> str:
        conversation_id = request.match_info["id"]
        problem = id_problem("conversation_id", conversation_id)
        if problem:
            raise invalid("conversation_id", problem)
        return conversation_id

    def _memory(self) -> ConversationMethods:
        if self._conversations is None:
            raise ApiError(501, "conversation methods are not configured", type_="server_error")
        return self._conversations

    async def _create_conversation(self, request: web.Request) -> web.Response:
        caller = await self._caller(request, browser_ok=True)
        body = await self._body(request)
        if body.get("items"):
            raise invalid("items", "initial items are not supported; send them as turns")
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise invalid("metadata", "metadata must be an object of string values")
        conversation_id = str(uuid.uuid4())
        try:
            await self._core.directory.add(caller.tenant.tenant_id, conversation_id)
        except DirectoryUnavailableError as exc:
            raise ApiError(503, str(exc), type_="server_error", code="service_unavailable") from exc
        if caller.session is not None:
            await self._session_call(
                self._sessions.claim(caller.session, "conversation", conversation_id)
            )
        return web.json_response(
            {
                "id": conversation_id,
                "object": "conversation",
                "created_at": int(time.time()),
                "metadata": metadata,
            },
            headers={CONVERSATION_HEADER: conversation_id},
        )

    async def _read_conversation(self, caller: Caller, conversation_id: str) -> Any:
        """The stored conversation, or None for one started but with no stored turn yet."""
        await self._require_own(caller, "conversation", conversation_id)
        try:
            return await self._memory().get_conversation(
                caller.tenant.tenant_id,
                GetConversationRequest(conversation_id=conversation_id),
                _RefusingContext(),
            )
        except Refused as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
            # Known to the gateway but not stored yet: created, or its first turn running.
            await self._core.require_conversation(caller.tenant, conversation_id)
            return None

    async def _get_conversation(self, request: web.Request) -> web.Response:
        caller = await self._caller(request, browser_ok=True)
        conversation_id = self._conversation_id(request)
        stored = await self._read_conversation(caller, conversation_id)
        created = stored.created_at.seconds if stored is not None else int(time.time())
        metadata = {"user_id": stored.user_id} if stored is not None and stored.user_id else {}
        return web.json_response(
            {
                "id": conversation_id,
                "object": "conversation",
                "created_at": created,
                "metadata": metadata,
            }
        )

    async def _conversation_items(self, request: web.Request) -> web.Response:
        caller = await self._caller(request, browser_ok=True)
        conversation_id = self._conversation_id(request)
        order = request.query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise invalid("order", "order must be asc or desc")
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            raise invalid("limit", "limit must be an integer") from None
        if not 1 <= limit <= 100:
            raise invalid("limit", "limit must be between 1 and 100")
        stored = await self._read_conversation(caller, conversation_id)
        items = []
        for index, message in enumerate(stored.messages if stored is not None else ()):
            if message.role not in (ROLE_USER, ROLE_ASSISTANT):
                continue
            user = message.role == ROLE_USER
            items.append(
                {
                    "id": f"msg_{index}",
                    "type": "message",
                    "status": "completed",
                    "role": "user" if user else "assistant",
                    "content": [
                        {"type": "input_text", "text": message.text}
                        if user
                        else {"type": "output_text", "text": message.text, "annotations": []}
                    ],
                    "switchboard": {"request_id": message.request_id, "model": message.model},
                }
            )
        if order == "desc":
            items.reverse()
        after = request.query.get("after")
        if after:
            ids = [item["id"] for item in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        page, more = items[:limit], len(items) > limit
        return web.json_response(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": more,
            }
        )

    async def _delete_conversation(self, request: web.Request) -> web.Response:
        caller = await self._caller(request, browser_ok=False)
        conversation_id = self._conversation_id(request)
        try:
            await self._memory().delete_conversation(
                caller.tenant.tenant_id,
                DeleteConversationRequest(conversation_id=conversation_id),
                _RefusingContext(),
            )
        except Refused as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
            # Created over HTTP but never stored: forgetting it in the directory is the delete.
            await self._core.require_conversation(caller.tenant, conversation_id)
            await self._core.directory.remove(caller.tenant.tenant_id, conversation_id)
        return web.json_response(
            {"id": conversation_id, "object": "conversation.deleted", "deleted": True}
        )

    async def _feedback(self, request: web.Request) -> web.Response:
        caller = await self._caller(request, browser_ok=True)
        body = await self._body(request)
        request_id = body.get("request_id")
        if not isinstance(request_id, str):
            raise invalid("request_id", "request_id is required: the reply's sb-request-id")
        problem = id_problem("request_id", request_id)
        if problem:
            raise invalid("request_id", problem)
        ratings = {"up": RATING_UP, "down": RATING_DOWN}
        rating = body.get("rating")
        if rating not in ratings:
            raise invalid("rating", "rating must be 'up' or 'down'")
        comment = body.get("comment", "")
        if not isinstance(comment, str):
            raise invalid("comment", "comment must be a string")
        await self._require_own(caller, "request", request_id)
        feedback = SubmitFeedbackRequest(
            request_id=request_id, rating=ratings[rating], comment=comment
        )
        await self._memory().submit_feedback(
            caller.tenant.tenant_id,
            self._core.redaction.feedback(feedback, caller.tenant),
            _RefusingContext(),
        )
        return web.json_response({"request_id": request_id, "rating": rating, "object": "feedback"})

    async def _create_session(self, request: web.Request) -> web.Response:
        """A browser session for a publishable key, from one of the tenant's origins."""
        key = bearer_key([("authorization", request.headers.get("Authorization", ""))])
        if key is None or not key.startswith(PUBLISHABLE_PREFIXES):
            raise ApiError(
                401, "a widget session needs a publishable key (pk-...)", code="invalid_api_key"
            )
        tenant = await self._publishable_tenant(key)
        origin = request.headers.get("Origin", "")
        if origin not in tenant.allowed_origins:
            raise ApiError(
                403,
                f"origin {origin or '(none)'} is not allowed for this key",
                type_="permission_error",
                code="origin_not_allowed",
            )
        token, session = await self._session_call(self._sessions.create(tenant.tenant_id, origin))
        return web.json_response(
            {
                "object": "widget.session",
                "session": token,
                "user_id": session.user_id,
                "expires_in": self._sessions.ttl_s,
            },
            status=201,
        )

    # ---- the widget and its demo page ---------------------------------------------------

    async def _widget(self, _: web.Request) -> web.FileResponse:
        return web.FileResponse(
            WEB_DIR / "widget.js",
            headers={"Content-Type": "text/javascript; charset=utf-8", "Cache-Control": "no-cache"},
        )

    async def _demo_page(self, _: web.Request) -> web.Response:
        if not self._demo_widget_key:
            raise web.HTTPNotFound()
        page = (WEB_DIR / "index.html").read_text()
        return web.Response(
            text=page.replace("{{WIDGET_KEY}}", self._demo_widget_key),
            content_type="text/html",
        )
