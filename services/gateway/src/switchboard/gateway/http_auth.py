"""Who calls the HTTP door: a secret key, or a publishable widget key with a browser session.

A secret key (`Authorization: Bearer <api key>`) is for servers only: a call carrying an
`Origin` header, i.e. from a browser, is refused. A publishable key (`pk-...`) with a browser
session (`sb-session`) may only chat and read or rate its own conversations, from the
tenant's allowed origins.
"""

import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from aiohttp import web
from pymongo.errors import PyMongoError

from switchboard.common.tenants import TenantConfig
from switchboard.gateway.auth import bearer_key
from switchboard.gateway.browser import (
    BrowserSession,
    BrowserSessions,
    SessionStoreUnavailableError,
)
from switchboard.gateway.core import ChatCore, Refused
from switchboard.gateway.http_common import SESSION_HEADER, refused
from switchboard.gateway.openai_shapes import ApiError

log = logging.getLogger(__name__)
T = TypeVar("T")

PUBLISHABLE_PREFIXES = ("pk-", "pk_")


class PublishableKeys(Protocol):
    """Finds the tenant of a publishable key (the MongoDB `TenantStore` in production)."""

    async def by_publishable_key(self, key: str) -> TenantConfig | None: ...


@dataclass(frozen=True)
class Caller:
    """Who calls: a tenant, and for a publishable key the browser session."""

    tenant: TenantConfig
    session: BrowserSession | None = None


class HttpAuth:
    """Authenticates HTTP calls and checks what a browser session may touch."""

    def __init__(
        self, core: ChatCore, publishable_keys: PublishableKeys, sessions: BrowserSessions
    ) -> None:
        self._core = core
        self._keys = publishable_keys
        self.sessions = sessions

    async def caller(self, request: web.Request, *, browser_ok: bool) -> Caller:
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
                raise refused(exc) from None
        if not browser_ok:
            raise ApiError(
                403,
                "a publishable key may only chat and read its own conversation",
                type_="permission_error",
                code="publishable_key_not_allowed",
            )
        tenant = await self.publishable_tenant(key)
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
        session = await self.session_call(self.sessions.get(token))
        if session is None or session.tenant_id != tenant.tenant_id:
            raise ApiError(401, "the session is unknown or expired", code="session_expired")
        return Caller(tenant, session)

    async def publishable_tenant(self, key: str) -> TenantConfig:
        """The tenant of a publishable key; 401 for an unknown one."""
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

    async def session_call(self, call: Awaitable[T]) -> T:
        """A call to the session store; unreachable is a 503."""
        try:
            return await call
        except SessionStoreUnavailableError as exc:
            raise ApiError(503, str(exc), type_="server_error", code="service_unavailable") from exc

    async def require_own(self, caller: Caller, kind: str, object_id: str) -> None:
        """A session may touch only what it started: anything else is simply not found."""
        if caller.session is None:
            return
        if not await self.session_call(self.sessions.owns(caller.session, kind, object_id)):
            raise ApiError(404, f"{kind} {object_id!r} not found", code="not_found")
