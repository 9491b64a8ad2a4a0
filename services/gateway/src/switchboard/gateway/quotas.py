"""Rate limits and daily budgets, checked before a turn is accepted.

Rate limits are GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp
per key): a tenant's `requests_per_minute` and a user's `requests_per_minute_per_user` each
refill at that rate, with a burst of the same size. Both are checked and charged in one
Redis script, so a refused request charges nothing and the refusal carries the exact delay
after which the request would pass. Written here rather than taken from `limits`: that
library checks one key per call (a user would be charged when the tenant limit refuses) and
brings its own Redis client.
"""

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from switchboard.common.tenants import TenantConfig

WINDOW_MS = 60_000

# KEYS[i]: the theoretical arrival time (ms) of limit i. ARGV[2i-1]: its emission interval in
# ms (window / limit); ARGV[2i]: its burst (= limit). Returns {0, 0} when admitted (every
# limit charged), else {i, wait_ms} for the limit that needs the longest wait (none charged).
GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local new_tats = {}
local worst, worst_index = 0, 0
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  local wait = new_tat - interval * burst - now
  if wait > worst then worst, worst_index = wait, i end
  new_tats[i] = new_tat
end
if worst_index > 0 then return {worst_index, math.ceil(worst)} end
for i, key in ipairs(KEYS) do
  local ttl = math.max(1, math.ceil(new_tats[i] - now))
  redis.call('SET', key, string.format('%d', math.ceil(new_tats[i])), 'PX', ttl)
end
return {0, 0}
"""


@dataclass(frozen=True)
class Refusal:
    """Why a turn may not start now, and when it may."""

    message: str
    retry_after_s: float


class QuotaUnavailableError(Exception):
    """The limits could not be checked (Redis down)."""


class Quotas(Protocol):
    """Decides whether a tenant's user may start a turn now."""

    async def admit(self, tenant: TenantConfig, user_id: str) -> Refusal | None:
        """None when admitted (and charged); a Refusal otherwise."""
        ...


def seconds_until_next_utc_day(now: datetime) -> float:
    """When the daily budget starts afresh."""
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (tomorrow - now).total_seconds()


def _limit_args(per_minute: int) -> list[float]:
    return [WINDOW_MS / per_minute, per_minute]


def budget_refusal(tenant: TenantConfig, spent_usd: float) -> Refusal | None:
    """The refusal of a tenant that has spent its daily budget, else None."""
    if spent_usd < tenant.daily_budget_usd:
        return None
    return Refusal(
        f"tenant {tenant.tenant_id} has spent its daily budget of {tenant.daily_budget_usd:g} USD",
        seconds_until_next_utc_day(datetime.now(UTC)),
    )


def rate_limit_args(tenant: TenantConfig, user_id: str) -> tuple[list[str], list[float]]:
    """The keys and arguments of `GCRA_SCRIPT` for a tenant's user."""
    limits = tenant.rate_limits
    # The hash tag {tenant} keeps both keys in one Redis Cluster slot.
    keys = [f"sb:rl:{{{tenant.tenant_id}}}:tenant"]
    args = _limit_args(limits.requests_per_minute)
    if user_id:
        # Requests without a user id count against the tenant's limit only.
        keys.append(f"sb:rl:{{{tenant.tenant_id}}}:user:{user_id}")
        args += _limit_args(limits.requests_per_minute_per_user)
    return keys, args


def rate_limit_refusal(
    tenant: TenantConfig, user_id: str, index: int, wait_ms: int
) -> Refusal | None:
    """What `GCRA_SCRIPT`'s answer means: None when admitted, else which limit refused."""
    limits = tenant.rate_limits
    if index == 0:
        return None
    if index == 1:
        message = (
            f"tenant {tenant.tenant_id} is over its rate limit of "
            f"{limits.requests_per_minute} requests per minute"
        )
    else:
        message = (
            f"user {user_id} is over the rate limit of "
            f"{limits.requests_per_minute_per_user} requests per minute"
        )
    return Refusal(message, max(wait_ms, 1) / 1000)


def retry_after_ms(refusal: Refusal) -> int:
    """The delay to put in the `retry-after-ms` trailer, never 0."""
    return max(1, math.ceil(refusal.retry_after_s * 1000))
