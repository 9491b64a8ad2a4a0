"""A tenant's spend per UTC day, in Redis, shared by the orchestrator and the gateway.

The orchestrator adds each turn's cost; the gateway refuses new turns once the tenant's
daily budget is spent. Amounts are kept as integer micro-dollars so increments are exact.
"""

from datetime import UTC, datetime

from redis.asyncio import Redis

MICRO = 1_000_000
# Two days: yesterday's figure stays readable for reports across midnight.
KEY_TTL_S = 2 * 24 * 3600


# Adds a charge once: a charge id seen before (a redelivered result) changes nothing.
# KEYS[1]: the day's spend; KEYS[2]: the charge's marker. ARGV: micro-dollars, the TTL.
ADD_ONCE_SCRIPT = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then
  redis.call('INCRBY', KEYS[1], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return redis.call('GET', KEYS[1]) or '0'
"""


def spend_key(tenant_id: str, day: str) -> str:
    """The Redis key of a tenant's spend on `day` (YYYY-MM-DD, UTC), in micro-USD."""
    return f"sb:{tenant_id}:spend:{day}"


def _charge_key(key: str, charge_id: str) -> str:
    # The spend key as the hash tag: a Redis Cluster keeps both in one slot for the script.
    return f"{{{key}}}:charged:{charge_id}"


def _today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


class BudgetLedger:
    """Daily spend per tenant."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._add_once = redis.register_script(ADD_ONCE_SCRIPT)

    async def add(
        self,
        tenant_id: str,
        cost_usd: float,
        day: str | None = None,
        *,
        charge_id: str | None = None,
    ) -> float:
        """Record a cost; returns the day's total in USD. With a `charge_id`, the cost is
        recorded once however often it is added (for at-least-once consumers)."""
        key = spend_key(tenant_id, day or _today())
        if charge_id is not None:
            total = await self._add_once(
                keys=[key, _charge_key(key, charge_id)],
                args=[round(cost_usd * MICRO), KEY_TTL_S],
            )
            return int(total) / MICRO
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incrby(key, round(cost_usd * MICRO))
            pipe.expire(key, KEY_TTL_S)
            total, _ = await pipe.execute()
        return int(total) / MICRO

    async def spent(self, tenant_id: str, day: str | None = None) -> float:
        """The day's spend in USD (today by default)."""
        value = await self._redis.get(spend_key(tenant_id, day or _today()))
        return int(value) / MICRO if value is not None else 0.0
