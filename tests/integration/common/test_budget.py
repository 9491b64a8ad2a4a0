"""The ledger against a real Redis (the `redis` fixture: skipped without one)."""

import uuid

import pytest
from redis.asyncio import Redis

from switchboard.common.budget import BudgetLedger


async def test_costs_add_up_exactly_per_tenant_and_day(redis: Redis) -> None:
    ledger = BudgetLedger(redis)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    try:
        for _ in range(10):
            await ledger.add(tenant, 0.1, day="2026-01-01")
        assert await ledger.spent(tenant, day="2026-01-01") == pytest.approx(1.0, abs=1e-9)
        assert await ledger.spent(tenant, day="2026-01-02") == 0.0
        assert await ledger.spent("other-" + tenant, day="2026-01-01") == 0.0
        assert await redis.ttl(f"sb:{tenant}:spend:2026-01-01") > 0
    finally:
        await redis.delete(f"sb:{tenant}:spend:2026-01-01")


async def test_a_charge_is_recorded_once_however_often_it_is_added(redis: Redis) -> None:
    ledger = BudgetLedger(redis)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    spend = f"sb:{tenant}:spend:2026-01-01"
    try:
        assert await ledger.add(tenant, 0.25, day="2026-01-01", charge_id="task-1") == 0.25
        # The same result redelivered: nothing more.
        assert await ledger.add(tenant, 0.25, day="2026-01-01", charge_id="task-1") == 0.25
        assert await ledger.add(tenant, 0.5, day="2026-01-01", charge_id="task-2") == 0.75
        assert await ledger.add(tenant, 0.1, day="2026-01-01") == pytest.approx(0.85)
        assert await ledger.spent(tenant, day="2026-01-01") == pytest.approx(0.85)
        assert 0 < await redis.ttl(f"{{{spend}}}:charged:task-1") <= 2 * 24 * 3600
        assert await redis.ttl(spend) > 0
    finally:
        await redis.delete(spend, f"{{{spend}}}:charged:task-1", f"{{{spend}}}:charged:task-2")
