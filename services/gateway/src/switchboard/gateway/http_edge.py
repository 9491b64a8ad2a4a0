"""The HTTP door: an OpenAI-compatible API and the web chat widget, over the same `ChatCore`.

aiohttp serves it in the gateway's own event loop, beside grpc.aio (docs/decisions/0030).
Every turn goes through `ChatCore.chat`, the pipeline the gRPC door uses: the same auth,
validation, idempotency (the `Idempotency-Key` header is the request id), quotas, locks,
publishing and reply routing. The door only translates: OpenAI's bodies to `ChatRequest`s
(openai_shapes.py), reply events to Server-Sent Events or whole answers, refusals to errors in
OpenAI's shape. docs/http-api.md is the reference.

This module builds the application: the routes of each part, the error middleware and CORS.
The parts: callers and keys (http_auth.py), Chat Completions and models (http_chat.py),
Responses (http_responses.py), conversations (http_conversations.py), feedback
(http_feedback.py), the widget and its sessions (http_widget.py), the knowledge base
(http_knowledge.py).
"""

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import web

from switchboard.gateway.browser import BrowserSessions
from switchboard.gateway.conversations import ConversationMethods
from switchboard.gateway.core import ChatCore, Refused
from switchboard.gateway.http_auth import Caller, HttpAuth, PublishableKeys
from switchboard.gateway.http_chat import ChatCompletionRoutes, Turns
from switchboard.gateway.http_common import (
    CORS_ALLOW_HEADERS,
    CORS_EXPOSE_HEADERS,
    refused,
)
from switchboard.gateway.http_conversations import ConversationRoutes
from switchboard.gateway.http_feedback import FeedbackRoutes
from switchboard.gateway.http_knowledge import KnowledgeRoutes
from switchboard.gateway.http_responses import ResponseRoutes
from switchboard.gateway.http_stream import StreamOptions
from switchboard.gateway.http_widget import WidgetRoutes
from switchboard.gateway.knowledge import KnowledgeForwarder
from switchboard.gateway.openai_shapes import ApiError

__all__ = ["Caller", "HttpEdge", "PublishableKeys"]

log = logging.getLogger(__name__)


class RouteGroup(Protocol):
    """One part of the API: adds its routes."""

    def add_routes(self, router: web.UrlDispatcher) -> None: ...


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
        knowledge: KnowledgeForwarder | None = None,
        stream_options: StreamOptions | None = None,
    ) -> None:
        self._max_body_bytes = max_body_bytes
        auth = HttpAuth(core, publishable_keys, sessions)
        turns = Turns(core, auth, stream_options)
        self._parts: list[RouteGroup] = [
            ChatCompletionRoutes(auth, turns),
            ResponseRoutes(auth, turns),
            ConversationRoutes(core, auth, conversations),
            FeedbackRoutes(core, auth, conversations),
            WidgetRoutes(auth, demo_widget_key),
        ]
        if knowledge is not None:
            self._parts.append(KnowledgeRoutes(auth, knowledge))

    def app(self) -> web.Application:
        """The routes, the error middleware and CORS."""
        app = web.Application(client_max_size=self._max_body_bytes, middlewares=[self._errors])
        app.on_response_prepare.append(self._cors_headers)
        for part in self._parts:
            part.add_routes(app.router)
        return app

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
            error = refused(exc)
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
            response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
            response.headers["Vary"] = "Origin"

    async def _preflight(self, request: web.Request) -> web.Response:
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS",
                "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
                "Access-Control-Max-Age": "600",
            },
        )
