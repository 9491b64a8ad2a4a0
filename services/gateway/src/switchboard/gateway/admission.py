"""Admission's Redis work in two round trips rather than one per check.

A turn is admitted by five checks in Redis (the request id's record, the conversation's
marker, the day's spend, the rate limits, the claim of the request id, the conversation's
lock) and, for a new conversation, its marker. One at a time they were five or six serial
round trips before the publish, each a send and a receive on both sides (the send system call
alone was a tenth of the gateway's CPU). `Admission` groups them by what they decide:

- `preflight`: the reads (record, marker, spend), which change nothing but the marker's TTL;
- `admit`: the writes (charge the rate limits, claim, lock, mark a new conversation), sent
  together and undone together when one of them refuses.

The order of the refusals (core.py) is unchanged: a known request id, NOT_FOUND, the budget,
the rate limits, FAILED_PRECONDITION. A refused turn keeps nothing: what `admit` took for it is
given back before the refusal is returned (a round trip more, for refusals only). Not a Lua
script: the keys live in different Redis Cluster slots (their hash tags are kept), and a
pipeline is split by slot where a script could not be.

The unit tests' `SequentialAdmission` (tests/unit/gateway/fakes.py) does the same through the
separate ports (quotas, request store, locks, directory), one call each, over their fakes.
"""

import asyncio
import json
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from redis.asyncio import Redis
from redis.exceptions import RedisError

from switchboard.common.budget import MICRO, spend_key
from switchboard.common.tenants import TenantConfig
from switchboard.gateway.adapters import conversation_lock_key, conversation_marker_key
from switchboard.gateway.idempotency import (
    RequestRecord,
    RequestStoreUnavailableError,
    decode_record,
    record_key,
)
from switchboard.gateway.ports import (
    BackendUnavailableError,
    HeldLock,
)
from switchboard.gateway.quotas import (
    GCRA_SCRIPT,
    Refusal,
    budget_refusal,
    rate_limit_args,
    rate_limit_refusal,
)

log = logging.getLogger(__name__)

# Deletes a key only while it holds the value given (redis-py's Lock release, for any key).
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Preflight:
    """What the reads found."""

    # The record of the request id, when one was sent and is known.
    existing: RequestRecord | None = None
    # Whether the conversation's marker exists (None: no conversation id, or not read here).
    marked: bool | None = None
    # A budget refusal (None: within the budget, or checked in `admit`).
    refusal: Refusal | None = None


@dataclass(frozen=True)
class Admitted:
    """What the writes did: exactly one of the fields says how it ended."""

    # Refused by a rate limit (or, in the unit tests' `SequentialAdmission`, the budget).
    refusal: Refusal | None = None
    # Another call with the same request id claimed it first: follow that one.
    existing: RequestRecord | None = None
    # The conversation's lock (None with no refusal and no existing: it is busy).
    lock: HeldLock | None = None


class Admission:
    """The two steps of admission (see the module docstring)."""

    async def preflight(
        self, tenant: TenantConfig, request_key: str | None, conversation_id: str
    ) -> Preflight:
        """The reads; `request_key` only when the caller sent a request id."""
        raise NotImplementedError

    async def admit(
        self,
        tenant: TenantConfig,
        user_id: str,
        request_key: str,
        record: RequestRecord,
        conversation_id: str,
        request_id: str,
        new_conversation: bool,
    ) -> Admitted:
        """Charge, claim, lock (and mark a new conversation), or none of them."""
        raise NotImplementedError


class _HeldLock:
    """A conversation lock taken by `RedisAdmission.admit`."""

    def __init__(self, admission: "RedisAdmission", key: str, token: str) -> None:
        self._admission = admission
        self._key = key
        self._token = token
        self._released = False

    async def release(self) -> None:
        if not self._released:
            self._released = True
            await self._admission.release_lock(self._key, self._token)


class RedisAdmission(Admission):
    """Admission in two pipelined round trips (the same keys and values as the ports')."""

    def __init__(
        self,
        redis: Redis,
        *,
        running_ttl_s: int,
        lock_ttl_s: float,
        marker_ttl_s: int,
    ) -> None:
        self._redis = redis
        self._running_ttl_s = running_ttl_s
        self._lock_ttl_ms = max(1, int(lock_ttl_s * 1000))
        self._marker_ttl_s = marker_ttl_s

    async def preflight(
        self, tenant: TenantConfig, request_key: str | None, conversation_id: str
    ) -> Preflight:
        tenant_id = tenant.tenant_id
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                if request_key:
                    pipe.get(record_key(request_key))
                if conversation_id:
                    # EXPIRE answers whether the marker exists and keeps it (directory.py).
                    pipe.expire(
                        conversation_marker_key(tenant_id, conversation_id), self._marker_ttl_s
                    )
                pipe.get(spend_key(tenant_id, datetime.now(UTC).strftime("%Y-%m-%d")))
                answers = list(await pipe.execute())
        except RedisError as exc:
            raise RequestStoreUnavailableError(f"Redis is unreachable: {exc}") from exc
        existing = decode_record(answers.pop(0)) if request_key else None
        marked = bool(answers.pop(0)) if conversation_id else None
        spent = answers.pop(0)
        refusal = budget_refusal(tenant, int(spent) / MICRO if spent is not None else 0.0)
        return Preflight(existing=existing, marked=marked, refusal=refusal)

    async def admit(
        self,
        tenant: TenantConfig,
        user_id: str,
        request_key: str,
        record: RequestRecord,
        conversation_id: str,
        request_id: str,
        new_conversation: bool,
    ) -> Admitted:
        keys, args = rate_limit_args(tenant, user_id)
        claim_key = record_key(request_key)
        claim = json.dumps(asdict(record))
        lock_key = conversation_lock_key(tenant.tenant_id, conversation_id)
        marker_key = conversation_marker_key(tenant.tenant_id, conversation_id)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                # The rate limits first: their script charges nothing when it refuses. EVAL,
                # not EVALSHA: a pipeline with a registered script asks SCRIPT EXISTS first,
                # one more round trip each time.
                pipe.eval(GCRA_SCRIPT, len(keys), *keys, *args)
                pipe.set(claim_key, claim, nx=True, ex=self._running_ttl_s)
                pipe.set(lock_key, request_id, nx=True, px=self._lock_ttl_ms)
                if new_conversation:
                    # Before the publish: the client may send its next message to another
                    # replica the moment it reads `started`.
                    pipe.set(marker_key, b"1", ex=self._marker_ttl_s)
                answers = list(await pipe.execute())
        except RedisError as exc:
            # Some of it may have been applied: give back what is this call's (best effort;
            # the TTLs free the rest).
            await self._give_back([(lock_key, request_id), (claim_key, claim)])
            raise BackendUnavailableError(f"Redis is unreachable: {exc}") from exc
        except asyncio.CancelledError:
            # The caller left while the writes were under way: a lock left behind would hold
            # the conversation for its whole TTL.
            await self._give_back([(lock_key, request_id), (claim_key, claim)])
            raise
        (index, wait_ms), claimed, locked = answers[0], bool(answers[1]), bool(answers[2])
        if int(index) == 0 and claimed and locked:
            return Admitted(lock=_HeldLock(self, lock_key, request_id))
        # Something refused: give back what this call took, then say why.
        taken = [(lock_key, request_id)] if locked else []
        if claimed:
            taken.append((claim_key, claim))
        if new_conversation:
            taken.append((marker_key, "1"))
        if not await self._give_back(taken):
            raise BackendUnavailableError("Redis is unreachable")
        if int(index) != 0:
            return Admitted(refusal=rate_limit_refusal(tenant, user_id, int(index), int(wait_ms)))
        if not claimed:
            try:
                existing = decode_record(await self._redis.get(claim_key))
            except RedisError as exc:
                raise RequestStoreUnavailableError(f"Redis is unreachable: {exc}") from exc
            # Gone between the two calls (released): report it as running so that the caller
            # follows it and learns that it vanished, rather than racing a second claim.
            return Admitted(existing=existing or record)
        return Admitted()

    async def release_lock(self, key: str, token: str) -> None:
        """Free a conversation lock this gateway took (only while it holds `token`)."""
        if not await self._give_back([(key, token)]):
            log.warning("conversation lock %s not released (its TTL frees it)", key)

    async def _give_back(self, taken: list[tuple[str, str]]) -> bool:
        """Delete each key that still holds the value this call wrote; False when Redis did
        not answer."""
        if not taken:
            return True
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, value in taken:
                    pipe.eval(RELEASE_SCRIPT, 1, key, value)
                await pipe.execute()
        except RedisError as exc:
            log.warning("admission could not give back %d keys: %s", len(taken), exc)
            return False
        return True


__all__ = [
    "Admission",
    "Admitted",
    "Preflight",
    "RedisAdmission",
]
