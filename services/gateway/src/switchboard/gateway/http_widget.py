"""The web chat widget's side of the HTTP door: browser sessions for publishable keys
(`POST /v1/widget/sessions`), the widget script and the demo page that embeds it."""

from pathlib import Path

from aiohttp import web

from switchboard.gateway.auth import bearer_key
from switchboard.gateway.http_auth import PUBLISHABLE_PREFIXES, HttpAuth
from switchboard.gateway.openai_shapes import ApiError

WEB_DIR = Path(__file__).parent / "web"


class WidgetRoutes:
    """Browser sessions, `/widget.js` and the demo page `/`."""

    def __init__(self, auth: HttpAuth, demo_widget_key: str = "") -> None:
        self._auth = auth
        self._demo_widget_key = demo_widget_key

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/widget/sessions", self._create_session)
        router.add_get("/widget.js", self._widget)
        router.add_get("/", self._demo_page)

    async def _create_session(self, request: web.Request) -> web.Response:
        """A browser session for a publishable key, from one of the tenant's origins."""
        key = bearer_key([("authorization", request.headers.get("Authorization", ""))])
        if key is None or not key.startswith(PUBLISHABLE_PREFIXES):
            raise ApiError(
                401, "a widget session needs a publishable key (pk-...)", code="invalid_api_key"
            )
        tenant = await self._auth.publishable_tenant(key)
        origin = request.headers.get("Origin", "")
        if origin not in tenant.allowed_origins:
            raise ApiError(
                403,
                f"origin {origin or '(none)'} is not allowed for this key",
                type_="permission_error",
                code="origin_not_allowed",
            )
        sessions = self._auth.sessions
        token, session = await self._auth.session_call(sessions.create(tenant.tenant_id, origin))
        return web.json_response(
            {
                "object": "widget.session",
                "session": token,
                "user_id": session.user_id,
                "expires_in": sessions.ttl_s,
            },
            status=201,
        )

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
