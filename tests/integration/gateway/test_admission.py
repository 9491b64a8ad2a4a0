"""Admission in two round trips (`RedisAdmission`) against a real Redis: what it takes when
it admits, and that a refusal keeps nothing."""

import uuid

from redis.asyncio import Redis

from switchboard.common.budget import BudgetLedger
from switchboard.common.tenants import RateLimits, TenantConfig
from switchboard.gateway.adapters import (
    conversation_lock_key,
    conversation_marker_key,
)
from switchboard.gateway.admission import RedisAdmission
from switchboard.gateway.idempotency import (
    RequestRecord,
    RequestState,
    record_key,
    request_key,
)


def tenant(per_user: int = 100, budget: float = 10.0) -> TenantConfig:
    return TenantConfig(
        tenant_id=f"t-{uuid.uuid4().hex[:10]}",
        rate_limits=RateLimits(requests_per_minute=1000, requests_per_minute_per_user=per_user),
        daily_budget_usd=budget,
    )


def admission(redis: Redis) -> RedisAdmission:
    return RedisAdmission(redis, running_ttl_s=60, lock_ttl_s=30, marker_ttl_s=60)


def record(config: TenantConfig) -> RequestRecord:
    return RequestRecord(config.tenant_id, "print", "chat.replies.test", RequestState.RUNNING)


async def cleanup(redis: Redis, config: TenantConfig) -> None:
    keys = [k async for k in redis.scan_iter(f"sb:rl:{{{config.tenant_id}}}:*")]
    keys += [k async for k in redis.scan_iter(f"sb:{config.tenant_id}:*")]
    keys += [k async for k in redis.scan_iter(f"sb:req:{{{config.tenant_id}/*")]
    if keys:
        await redis.delete(*keys)


async def test_admitted_it_claims_locks_and_marks_a_new_conversation(redis: Redis) -> None:
    config, gate = tenant(), admission(redis)
    key = request_key(config.tenant_id, "r1")
    try:
        pre = await gate.preflight(config, key, "")
        assert pre.existing is None and pre.marked is None and pre.refusal is None
        admitted = await gate.admit(config, "alice", key, record(config), "c1", "r1", True)
        assert admitted.lock is not None and admitted.refusal is None
        assert await redis.get(conversation_lock_key(config.tenant_id, "c1")) == b"r1"
        assert await redis.exists(record_key(key), conversation_marker_key(config.tenant_id, "c1"))
        assert (await gate.preflight(config, key, "c1")).existing == record(config)
        assert (await gate.preflight(config, None, "c1")).marked is True
        # The same conversation is busy now, and the busy call keeps no claim.
        other = request_key(config.tenant_id, "r2")
        busy = await gate.admit(config, "alice", other, record(config), "c1", "r2", False)
        assert busy.lock is None and busy.refusal is None and busy.existing is None
        assert not await redis.exists(record_key(other))
        await admitted.lock.release()
        assert not await redis.exists(conversation_lock_key(config.tenant_id, "c1"))
    finally:
        await cleanup(redis, config)


async def test_a_rate_limited_call_keeps_no_claim_lock_or_marker(redis: Redis) -> None:
    config, gate = tenant(per_user=1), admission(redis)
    try:
        first = await gate.admit(
            config, "bob", request_key(config.tenant_id, "r1"), record(config), "c1", "r1", True
        )
        assert first.lock is not None
        await first.lock.release()
        key = request_key(config.tenant_id, "r2")
        refused = await gate.admit(config, "bob", key, record(config), "c2", "r2", True)
        assert refused.refusal is not None and "user bob" in refused.refusal.message
        assert not await redis.exists(
            record_key(key),
            conversation_lock_key(config.tenant_id, "c2"),
            conversation_marker_key(config.tenant_id, "c2"),
        )
    finally:
        await cleanup(redis, config)


async def test_a_lost_claim_is_followed_and_its_owner_keeps_the_lock(redis: Redis) -> None:
    config, gate = tenant(), admission(redis)
    key = request_key(config.tenant_id, "r1")
    try:
        winner = await gate.admit(config, "a", key, record(config), "c1", "r1", False)
        assert winner.lock is not None
        loser = await gate.admit(config, "a", key, record(config), "c1", "r1", False)
        assert loser.existing == record(config) and loser.lock is None
        assert await redis.get(conversation_lock_key(config.tenant_id, "c1")) == b"r1"
    finally:
        await cleanup(redis, config)


async def test_a_spent_budget_is_refused_before_anything_is_charged(redis: Redis) -> None:
    config, gate = tenant(budget=1.0), admission(redis)
    try:
        await BudgetLedger(redis).add(config.tenant_id, 1.5)
        pre = await gate.preflight(config, None, "")
        assert pre.refusal is not None and "daily budget" in pre.refusal.message
        assert not [k async for k in redis.scan_iter(f"sb:rl:{{{config.tenant_id}}}:*")]
    finally:
        await cleanup(redis, config)
