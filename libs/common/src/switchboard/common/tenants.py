"""Tenants: who a caller is and what their turns may do.

A tenant's configuration lives in MongoDB (`tenants` collection, one document per tenant,
`_id` = tenant id). The local default is seeded from `deploy/local/tenants.yaml` by
`python -m switchboard.common.tenants seed FILE`. API keys are stored only as SHA-256
digests; a YAML entry may name an environment variable holding a key to hash at seeding.
"""

import argparse
import asyncio
import hashlib
import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from cachetools import TTLCache
from pydantic import BaseModel, Field, field_validator
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

log = logging.getLogger(__name__)

TENANTS_COLLECTION = "tenants"


def hash_api_key(api_key: str) -> str:
    """The stored form of an API key."""
    return hashlib.sha256(api_key.encode()).hexdigest()


class ModelPolicy(BaseModel):
    """How a tenant's turns pick a tier."""

    # "auto" lets the router decide; "cheap" or "frontier" pins every turn.
    default_tier: Literal["auto", "cheap", "frontier"] = "auto"
    allowed_tiers: list[str] = Field(default_factory=lambda: ["cheap", "frontier"])
    # Re-run a low-confidence cheap answer on the frontier tier.
    cascade: bool = False
    # The learned router's operating point (docs/routing.md): the cheapest threshold that
    # keeps this share of complex messages on frontier, or else the one that routes at most
    # this share cheap. Unset: the service default. Recall wins when both are set.
    router_target_recall: float | None = Field(default=None, ge=0.5, le=1.0)
    router_target_cheap_share: float | None = Field(default=None, ge=0.0, le=1.0)
    # The tenant's own learned router, retrained on its traffic: `<name>.json` in the
    # orchestrator's router_models_dir. Unset: the service's router.
    router_model: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class GuardrailPolicy(BaseModel):
    """What the guardrails do for a tenant."""

    # Redact personal data (e-mails, phones) before the provider sees it (at the gateway).
    # Secrets (cards, IBANs, keys, passwords) and national ids are always redacted at the
    # gateway, before anything is published or stored; storage is always fully redacted.
    redact_pii: bool = True
    prompt_injection: Literal["block", "flag", "off"] = "block"
    blocked_topics: list[str] = Field(default_factory=list)
    # Injection score (0..1) from which the policy above applies.
    injection_threshold: float = Field(default=0.5, gt=0, le=1)
    # Redact PII and secrets in generated text while it streams.
    redact_output: bool = True
    # Hand the conversation to a human on request, strong frustration or repeated failure.
    escalation: bool = True
    frustration_threshold: float = Field(default=1.0, gt=0)
    failure_turns: int = Field(default=3, ge=1)
    # Regions whose national phone formats are recognised (international ones always are).
    phone_regions: list[str] = Field(
        default_factory=lambda: ["US", "GB", "DE", "FR", "ES", "IT", "NL"]
    )
    refusal_message: str = (
        "I'm sorry, but I can't help with that request. Is there anything else I can do for you?"
    )
    topic_refusal_message: str = (
        "I'm sorry, but I can't discuss that topic here. Is there anything else I can help with?"
    )
    handoff_message: str = (
        "I'm connecting you with a member of our team. Your ticket number is {ticket_id}; "
        "someone will be with you shortly."
    )


class RateLimits(BaseModel):
    """Per-tenant request limits."""

    requests_per_minute: int = Field(default=600, gt=0)
    requests_per_minute_per_user: int = Field(default=30, gt=0)


def tool_url_problem(url: object) -> str | None:
    """What is wrong with an HTTP tool's URL template, or None (`{name}` placeholders are
    filled per call, so they are checked with their braces removed)."""
    if not isinstance(url, str):
        return "must be a string"
    parts = urlsplit(url.replace("{", "").replace("}", ""))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an absolute http(s) URL"
    try:
        parts.port  # noqa: B018 - urllib checks the port only when it is read
    except ValueError as exc:
        return f"has an invalid port ({exc})"
    return None


class TenantConfig(BaseModel):
    """Everything Switchboard knows about one tenant."""

    tenant_id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    name: str = ""
    api_key_sha256: list[str] = Field(default_factory=list)
    # Publishable (browser) keys of the web chat widget, as SHA-256 digests: they may only
    # chat and read their own conversation, and only from `allowed_origins`.
    publishable_key_sha256: list[str] = Field(default_factory=list)
    # Origins (scheme://host[:port]) whose pages may use the publishable keys (CORS).
    allowed_origins: list[str] = Field(default_factory=list)
    # A template: {tenant_name}, {user_id}, {date} and the request's metadata keys
    # (e.g. {user_name}, {locale}) are filled per turn; unknown names stay as written.
    system_prompt: str = (
        "You are {tenant_name}'s customer-support assistant. Be helpful, concise and polite. "
        "Answer in the customer's language."
    )
    model_policy: ModelPolicy = Field(default_factory=ModelPolicy)
    guardrails: GuardrailPolicy = Field(default_factory=GuardrailPolicy)
    rate_limits: RateLimits = Field(default_factory=RateLimits)
    daily_budget_usd: float = Field(default=50.0, ge=0)
    retention_days: int = Field(default=90, gt=0)
    # Tool definitions, as the orchestrator's tool registry reads them (HTTP tools:
    # name, description, method, url, parameters (JSON Schema), timeout_s).
    tools: list[dict[str, Any]] = Field(default_factory=list)
    # Built-in tools offered to the model: "escalate_to_human", "current_time".
    builtin_tools: list[str] = Field(default_factory=lambda: ["escalate_to_human", "current_time"])
    # Cache answers to FAQ-style first turns this long (0 disables the cache).
    response_cache_ttl_s: int = Field(default=0, ge=0)
    # Search the tenant's knowledge base in every turn and ground the answer in it. Off, the
    # turn makes no search call (a tenant without documents saves the round trip); the
    # `search_knowledge` built-in tool is governed by `builtin_tools` alone.
    knowledge_grounding: bool = True

    @field_validator("tools")
    @classmethod
    def _tool_urls(cls, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # Checked when a tenant is saved or seeded: a URL that passes its JSON type but
        # cannot be called (a port out of range) would otherwise fail every turn.
        for index, tool in enumerate(tools):
            if tool.get("type", "http") != "http":
                continue
            problem = tool_url_problem(tool.get("url"))
            if problem is not None:
                raise ValueError(f"tools[{index}].url {problem}")
        return tools


TenantCache = TTLCache[str, tuple[float, "TenantConfig | None"]]


class TenantStore:
    """Reads tenants from MongoDB, with a small bounded cache (tenants change rarely)."""

    def __init__(
        self,
        client: AsyncMongoClient[dict[str, Any]],
        database: str,
        cache_ttl_s: float = 30.0,
        cache_size: int = 1_024,
        stale_for_s: float = 300.0,
    ) -> None:
        self._collection = client[database][TENANTS_COLLECTION]
        self._cache_ttl_s = cache_ttl_s
        self._cache_size = cache_size
        # When a refresh fails, a known tenant is served from the cache this much longer.
        self._stale_for_s = stale_for_s
        # (fetched at, tenant); an entry is fresh for cache_ttl_s and kept, least recently
        # used first out, for the stale window.
        keep_s = max(cache_ttl_s, stale_for_s, 1e-3)
        self._by_id: TenantCache = TTLCache(cache_size, keep_s, timer=time.monotonic)
        self._by_key: TenantCache = TTLCache(cache_size, keep_s, timer=time.monotonic)
        self._by_publishable_key: TenantCache = TTLCache(cache_size, keep_s, timer=time.monotonic)

    async def get(self, tenant_id: str) -> TenantConfig | None:
        """The tenant, or None when unknown."""
        return await self._cached(self._by_id, tenant_id, {"_id": tenant_id})

    async def by_api_key(self, api_key: str) -> TenantConfig | None:
        """The tenant owning `api_key`, or None."""
        digest = hash_api_key(api_key)
        return await self._cached(self._by_key, digest, {"api_key_sha256": digest})

    async def by_publishable_key(self, key: str) -> TenantConfig | None:
        """The tenant owning the publishable (browser) key `key`, or None."""
        digest = hash_api_key(key)
        return await self._cached(
            self._by_publishable_key, digest, {"publishable_key_sha256": digest}
        )

    async def upsert(self, tenant: TenantConfig) -> None:
        """Create or replace a tenant."""
        document = tenant.model_dump()
        document["_id"] = tenant.tenant_id
        await self._collection.replace_one({"_id": tenant.tenant_id}, document, upsert=True)
        self._by_id.clear()
        self._by_key.clear()
        self._by_publishable_key.clear()

    async def _cached(
        self,
        cache: "TenantCache",
        key: str,
        query: dict[str, Any],
    ) -> TenantConfig | None:
        now = time.monotonic()
        hit = cache.get(key)
        if hit is not None and now - hit[0] < self._cache_ttl_s:
            return hit[1]
        try:
            document = await self._collection.find_one(query)
        except PyMongoError:
            # A slow or absent store must not turn every caller away at each refresh: the
            # last known tenant stays valid for a bounded time.
            if hit is not None and hit[1] is not None and now - hit[0] < self._stale_for_s:
                log.warning("tenant store unavailable; serving %s from the cache", key[:12])
                return hit[1]
            raise
        tenant = None
        if document is not None:
            document.pop("_id", None)
            tenant = TenantConfig.model_validate(document)
        cache[key] = (now, tenant)
        return tenant


def _hashed_keys(variables: list[str], environ: Mapping[str, str]) -> list[str]:
    """The digests of the keys in `NAME=default` variables (a variable set empty adds none)."""
    hashes = []
    for variable in variables:
        name, _, default = str(variable).partition("=")
        key = environ.get(name, default)
        if key:
            hashes.append(hash_api_key(key))
    return hashes


def load_seed(path: Path, environ: Mapping[str, str] | None = None) -> list[TenantConfig]:
    """Tenants from a YAML seed file; `api_keys_from_env` (and `publishable_keys_from_env`)
    name variables holding keys, read from `environ` (the process environment by default)."""
    environ = os.environ if environ is None else environ
    raw = yaml.safe_load(path.read_text()) or {}
    tenants = []
    for entry in raw.get("tenants", []):
        entry = dict(entry)
        hashes = list(entry.pop("api_key_sha256", []))
        hashes += _hashed_keys(entry.pop("api_keys_from_env", []), environ)
        publishable = list(entry.pop("publishable_key_sha256", []))
        publishable += _hashed_keys(entry.pop("publishable_keys_from_env", []), environ)
        tenants.append(
            TenantConfig.model_validate(
                {**entry, "api_key_sha256": hashes, "publishable_key_sha256": publishable}
            )
        )
    return tenants


async def _seed(path: Path, mongo_url: str, database: str) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_url, serverSelectionTimeoutMS=10_000
    )
    try:
        store = TenantStore(client, database)
        for tenant in load_seed(path):
            await store.upsert(tenant)
            print(f"seeded tenant {tenant.tenant_id}", file=sys.stderr)
    finally:
        await client.close()


def main() -> None:
    """`python -m switchboard.common.tenants seed FILE`"""
    parser = argparse.ArgumentParser(prog="python -m switchboard.common.tenants")
    sub = parser.add_subparsers(dest="command", required=True)
    seed = sub.add_parser("seed", help="create or replace the tenants of a YAML file")
    seed.add_argument("file", type=Path)
    seed.add_argument(
        "--mongo-url",
        default=os.environ.get("SWITCHBOARD_MONGO_URL", "mongodb://127.0.0.1:27017/"),
    )
    seed.add_argument(
        "--database", default=os.environ.get("SWITCHBOARD_MONGO_DATABASE", "switchboard")
    )
    args = parser.parse_args()
    asyncio.run(_seed(args.file, args.mongo_url, args.database))


if __name__ == "__main__":
    main()
