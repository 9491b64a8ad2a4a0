"""Browser sessions of the web chat widget (publishable keys), kept in Redis.

A page holding a tenant's publishable key opens a session: the session gets an end-user
identity of its own (so the per-user rate limit applies to each browser) and a random token
that the page keeps. Every conversation and request a session starts is recorded as its own,
and a session may read or rate only those. Tokens are stored only as SHA-256 digests.
Redis, not a signed token, so that every replica sees a session and it can be revoked.
"""

import hashlib
import json
import secrets
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

SESSION_PREFIX = "sb:web:session:"
OWNER_PREFIX = "sb:web:owner:"


class SessionStoreUnavailableError(Exception):
    """Redis could not be reached."""


@dataclass(frozen=True)
class BrowserSession:
    """One browser's session: its tenant, end-user identity and origin."""

    tenant_id: str
    user_id: str
    origin: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _owner_key(tenant_id: str, kind: str, object_id: str) -> str:
    # The hash tag keeps a tenant's keys in one Redis Cluster slot.
    return f"{OWNER_PREFIX}{{{tenant_id}}}:{kind}:{object_id}"


class BrowserSessions:
    """Sessions and what each one owns; every entry lives `ttl_s` after its last use."""

    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self._redis = redis
        self.ttl_s = ttl_s

    async def create(self, tenant_id: str, origin: str) -> tuple[str, BrowserSession]:
        """A new session and its token (shown once; only its digest is kept)."""
        token = "sbs_" + secrets.token_urlsafe(24)
        session = BrowserSession(tenant_id, "web-" + secrets.token_hex(8), origin)
        value = json.dumps({"tenant_id": tenant_id, "user_id": session.user_id, "origin": origin})
        try:
            await self._redis.set(SESSION_PREFIX + _digest(token), value, ex=self.ttl_s)
        except RedisError as exc:
            raise SessionStoreUnavailableError(f"Redis is unreachable: {exc}") from exc
        return token, session

    async def get(self, token: str) -> BrowserSession | None:
        """The session of `token` (its lifetime starts again), or None when unknown."""
        try:
            raw = await self._redis.getex(SESSION_PREFIX + _digest(token), ex=self.ttl_s)
        except RedisError as exc:
            raise SessionStoreUnavailableError(f"Redis is unreachable: {exc}") from exc
        if raw is None:
            return None
        data = json.loads(raw)
        return BrowserSession(data["tenant_id"], data["user_id"], data["origin"])

    async def claim(self, session: BrowserSession, kind: str, object_id: str) -> None:
        """Record a conversation ("conversation") or request ("request") as the session's."""
        try:
            await self._redis.set(
                _owner_key(session.tenant_id, kind, object_id), session.user_id, ex=self.ttl_s
            )
        except RedisError as exc:
            raise SessionStoreUnavailableError(f"Redis is unreachable: {exc}") from exc

    async def owns(self, session: BrowserSession, kind: str, object_id: str) -> bool:
        """Whether the session started this conversation or request."""
        try:
            owner = await self._redis.get(_owner_key(session.tenant_id, kind, object_id))
        except RedisError as exc:
            raise SessionStoreUnavailableError(f"Redis is unreachable: {exc}") from exc
        if owner is None:
            return False
        value = owner.decode() if isinstance(owner, bytes) else str(owner)
        return value == session.user_id
