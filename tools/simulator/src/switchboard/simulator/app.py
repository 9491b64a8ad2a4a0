"""The simulator's aiohttp application, and a helper to run it in-process."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from . import anthropic_api, embeddings_api, openai_api, replies
from .settings import Settings
from .state import STATE_KEY, SimulatorState

log = logging.getLogger(__name__)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(settings: Settings | None = None) -> web.Application:
    """The simulator application: both provider APIs plus `/_health` and `/_journal`."""
    settings = settings if settings is not None else Settings()
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[_json_errors])
    app[STATE_KEY] = SimulatorState.from_settings(settings)
    app.router.add_post("/v1/chat/completions", openai_api.chat_completions)
    app.router.add_post("/v1/messages", anthropic_api.messages)
    app.router.add_post("/v1/embeddings", embeddings_api.embeddings)
    app.router.add_get("/v1/models", _list_models)
    app.router.add_get("/v1/models/{model}", _retrieve_model)
    app.router.add_get("/_health", _health)
    app.router.add_get("/_journal", _get_journal)
    app.router.add_delete("/_journal", _clear_journal)
    app.on_startup.append(_warm_up)
    return app


async def _warm_up(app: web.Application) -> None:
    # Load the tokenizer before serving, so that the first request is not half a second late.
    replies.warm_up()


def _is_anthropic(request: web.Request) -> bool:
    """Whether a request comes from an Anthropic client (both APIs share `/v1/models`)."""
    headers = request.headers
    return (
        request.path.startswith("/v1/messages")
        or "anthropic-version" in headers
        or "x-api-key" in headers
    )


@web.middleware
async def _json_errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Unknown routes, wrong methods and oversized bodies answered in the provider's shape."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # The 413 text names the limit; other texts only repeat the reason.
        message = (exc.text or exc.reason) if exc.status == 413 else exc.reason
        if _is_anthropic(request):
            kind = {
                404: "not_found_error",
                413: "request_too_large",
            }.get(exc.status, "invalid_request_error")
            return anthropic_api.error_response(exc.status, message, type_=kind)
        if exc.status in (404, 405):
            message = f"Invalid URL ({request.method} {request.path})"
        return openai_api.error_response(exc.status, message)


async def _list_models(request: web.Request) -> web.StreamResponse:
    models = request.app[STATE_KEY].settings.models
    if _is_anthropic(request):
        return anthropic_api.list_models(models)
    return openai_api.list_models(models)


async def _retrieve_model(request: web.Request) -> web.StreamResponse:
    model = request.match_info["model"]
    if _is_anthropic(request):
        return anthropic_api.retrieve_model(model)
    return openai_api.retrieve_model(model)


async def _health(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


async def _get_journal(request: web.Request) -> web.StreamResponse:
    return web.json_response({"requests": request.app[STATE_KEY].journal.entries()})


async def _clear_journal(request: web.Request) -> web.StreamResponse:
    request.app[STATE_KEY].journal.clear()
    return web.json_response({"requests": []})


@dataclass(frozen=True, slots=True)
class RunningSimulator:
    """Where a running simulator listens."""

    host: str
    port: int
    app: web.Application

    @property
    def base_url(self) -> str:
        """`http://host:port`; also the Anthropic SDK's `base_url`."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """The OpenAI SDK's `base_url`."""
        return f"{self.base_url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """The Anthropic SDK's `base_url`."""
        return self.base_url

    @property
    def state(self) -> SimulatorState:
        """Settings and journal of the running application."""
        return self.app[STATE_KEY]


@asynccontextmanager
async def serve(settings: Settings | None = None) -> AsyncIterator[RunningSimulator]:
    """Run the simulator on the current event loop until the block exits.

    With `port=0` the system picks a free port: read it from the yielded value.
    """
    settings = settings if settings is not None else Settings()
    app = create_app(settings)
    runner = web.AppRunner(
        app,
        access_log=log if settings.access_log else None,
        # A client that disconnects stops its generation, as with a real provider.
        handler_cancellation=True,
        shutdown_timeout=settings.shutdown_timeout_s,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield RunningSimulator(host=str(host), port=int(port), app=app)
    finally:
        await runner.cleanup()
