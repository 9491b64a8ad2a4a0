"""Rate limits (the GCRA Lua script) and budgets, as admission applies them, against a real
Redis."""

import uuid
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from switchboard.common.budget import BudgetLedger
from switchboard.common.tenants import RateLimits, TenantConfig
from switchboard.gateway.admission import RedisAdmission
from switchboard.gateway.idempotency import RequestRecord, RequestState, request_key
from switchboard.gateway.quotas import Refusal, retry_after_ms, seconds_until_next_utc_day


def tenant(per_minute: int = 100, per_user: int = 2, budget: float = 10.0) -> TenantConfig:
    return TenantConfig(
        tenant_id=f"t-{uuid.uuid4().hex[:10]}",
        rate_limits=RateLimits(
            requests_per_minute=per_minute, requests_per_minute_per_user=per_user
        ),
        daily_budget_usd=budget,
    )


async def cleanup(redis: Redis, config: TenantConfig) -> None:
    keys = [k async for k in redis.scan_iter(f"sb:rl:{{{config.tenant_id}}}:*")]
    keys += [k async for k in redis.scan_iter(f"sb:{config.tenant_id}:*")]
    keys += [k async for k in redis.scan_iter(f"sb:req:{{{config.tenant_id}/*")]
    if keys:
        await redis.delete(*keys)


class Quotas:
    """Admission's budget and rate-limit checks alone: each call a new request in a new
    conversation, its lock released at once, so that only the limits can refuse."""

    def __init__(self, redis: Redis) -> None:
        self._gate = RedisAdmission(redis, running_ttl_s=60, lock_ttl_s=30, marker_ttl_s=60)

    async def admit(self, config: TenantConfig, user_id: str) -> Refusal | None:
        pre = await self._gate.preflight(config, None, "")
        if pre.refusal is not None:
            return pre.refusal
        request_id = uuid.uuid4().hex
        record = RequestRecord(config.tenant_id, "print", "chat.replies.t", RequestState.RUNNING)
        admitted = await self._gate.admit(
            config,
            user_id,
            request_key(config.tenant_id, request_id),
            record,
            f"c-{request_id}",
            request_id,
            True,
        )
        if admitted.lock is not None:
            await admitted.lock.release()
        return admitted.refusal


async def test_a_user_gets_a_burst_of_its_limit_then_waits_one_interval(redis: Redis) -> None:
    config = tenant(per_user=2)
    quotas = Quotas(redis)
    try:
        assert await quotas.admit(config, "alice") is None
        assert await quotas.admit(config, "alice") is None
        refusal = await quotas.admit(config, "alice")
        assert refusal is not None and "user alice" in refusal.message
        # Two per minute: one slot every 30 s.
        assert 29.0 < refusal.retry_after_s <= 30.0
        assert 29_000 < retry_after_ms(refusal) <= 30_000
        # Another user of the same tenant is not affected.
        assert await quotas.admit(config, "bob") is None
    finally:
        await cleanup(redis, config)


async def test_the_tenant_limit_binds_every_user_and_a_refusal_charges_nothing(
    redis: Redis,
) -> None:
    config = tenant(per_minute=3, per_user=2)
    quotas = Quotas(redis)
    try:
        assert await quotas.admit(config, "a") is None
        assert await quotas.admit(config, "b") is None
        assert await quotas.admit(config, "") is None  # no user id: the tenant limit only
        refusal = await quotas.admit(config, "c")
        assert refusal is not None and f"tenant {config.tenant_id}" in refusal.message
        assert 19.0 < refusal.retry_after_s <= 20.0
        # c was refused by the tenant limit, so its own bucket is untouched.
        assert await redis.exists(f"sb:rl:{{{config.tenant_id}}}:user:c") == 0
        # Keys expire once their bucket is full again: nothing stays behind forever.
        ttl_ms = await redis.pttl(f"sb:rl:{{{config.tenant_id}}}:tenant")
        assert 0 < ttl_ms <= 60_000
    finally:
        await cleanup(redis, config)


async def test_a_spent_daily_budget_refuses_until_midnight_utc(redis: Redis) -> None:
    config = tenant(budget=0.05)
    ledger = BudgetLedger(redis)
    quotas = Quotas(redis)
    try:
        await ledger.add(config.tenant_id, 0.04)
        assert await quotas.admit(config, "u") is None
        await ledger.add(config.tenant_id, 0.01)
        refusal = await quotas.admit(config, "u")
        assert refusal is not None and "daily budget of 0.05 USD" in refusal.message
        assert 0 < refusal.retry_after_s <= 24 * 3600
    finally:
        await cleanup(redis, config)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2026, 3, 1, 23, 59, 30, tzinfo=UTC), 30.0),
        (datetime(2026, 3, 1, 0, 0, 0, tzinfo=UTC), 86_400.0),
        (datetime(2026, 12, 31, 12, 0, 0, tzinfo=UTC), 43_200.0),
    ],
)
def test_the_budget_resets_at_the_next_utc_midnight(now: datetime, expected: float) -> None:
    assert seconds_until_next_utc_day(now) == expected
