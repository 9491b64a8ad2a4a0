"""A tenant's spend per UTC day, in Redis, shared by the orchestrator and the gateway.

The orchestrator adds each turn's cost; the gateway refuses new turns once the tenant's
daily budget is spent. Amounts are kept as integer micro-dollars so increments are exact.
"""

from datetime import UTC, datetime

from redis.asyncio import Redis

MICRO = 1_000_000
# Two days: yesterday's figure stays readable for reports across midnight.
KEY_TTL_S = 2 * 24 * 3600


def _key(tenant_id: str, day: str) -> str:
    return f"sb:{tenant_id}:spend:{day}"


def _today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


class BudgetLedger:
    """Daily spend per tenant."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def add(self, tenant_id: str, cost_usd: float, day: str | None = None) -> float:
        """Record a cost; returns the day's total in USD."""
        key = _key(tenant_id, day or _today())
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incrby(key, round(cost_usd * MICRO))
            pipe.expire(key, KEY_TTL_S)
            total, _ = await pipe.execute()
        return int(total) / MICRO

    async def spent(self, tenant_id: str, day: str | None = None) -> float:
        """The day's spend in USD (today by default)."""
        value = await self._redis.get(_key(tenant_id, day or _today()))
        return int(value) / MICRO if value is not None else 0.0
