"""Attempts and results of generations, shared by every worker through Redis.

A task redelivered after a worker died must know that it is a second attempt (to send
`reset` first and number its events above the first attempt's), and a task whose result was
already published must not run again. The ledger keys a generation by request id and
sequence base rather than task id, so that a task published twice by the orchestrator is
still one generation.

Exactly one attempt's result is ever published: an attempt records (`settle`) its result
only while no later attempt has begun, and a later attempt that begins after a result was
recorded publishes that result instead of generating again. Otherwise two attempts could
both reach the client: the later one's `reset` and text, then the earlier one's result
ending the turn with a `done` numbered below them (which the gateway drops), the later
result ignored, and the client left waiting. Recording before publishing also means that
a run stopped between the two (a crash, or a cancellation at a rebalance) loses nothing:
the redelivered task publishes what was recorded.
"""

from typing import Protocol

from redis.asyncio import Redis

from switchboard.v1.events_pb2 import LlmResult, LlmTask


def generation_key(task: LlmTask) -> str:
    """The Redis key prefix of the generation `task` asks for."""
    return f"sb:{task.tenant_id}:llm:{task.request_id or task.task_id}:{task.sequence_base}"


# What `begin` found: an attempt number to run, a result recorded but perhaps never
# published (publish it), or None when the result was published already.
Begun = int | LlmResult | None


class GenerationLedger(Protocol):
    """Where attempts are counted and results recorded."""

    async def begin(self, task: LlmTask) -> Begun:
        """Count one more attempt and return its number (1 for the first), unless the
        generation has a result already (see `Begun`)."""
        ...

    async def settle(self, task: LlmTask, attempt: int, result: LlmResult) -> bool:
        """Record `result` as the generation's, unless a later attempt began (False: this
        attempt was superseded and its result must not be published)."""
        ...

    async def finish(self, task: LlmTask) -> None:
        """Record that the generation's result was published."""
        ...


_BEGIN = """
if redis.call('EXISTS', KEYS[1] .. ':done') == 1 then return {-1} end
local recorded = redis.call('GET', KEYS[1] .. ':result')
if recorded then return {0, recorded} end
local attempt = redis.call('INCR', KEYS[1] .. ':attempts')
redis.call('EXPIRE', KEYS[1] .. ':attempts', ARGV[1])
return {attempt}
"""

_SETTLE = """
local latest = tonumber(redis.call('GET', KEYS[1] .. ':attempts') or '0')
if latest > tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1] .. ':result', ARGV[2], 'NX', 'EX', ARGV[3])
return 1
"""


class RedisGenerationLedger:
    """The ledger in Redis (two small Lua scripts, each atomic), every key expiring after
    `ttl_s`."""

    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        self._begin = redis.register_script(_BEGIN)
        self._settle = redis.register_script(_SETTLE)

    async def begin(self, task: LlmTask) -> Begun:
        answer = await self._begin(keys=[generation_key(task)], args=[self._ttl_s])
        if int(answer[0]) < 0:
            return None
        if int(answer[0]) == 0:
            return LlmResult.FromString(answer[1])
        return int(answer[0])

    async def settle(self, task: LlmTask, attempt: int, result: LlmResult) -> bool:
        settled = await self._settle(
            keys=[generation_key(task)],
            args=[attempt, result.SerializeToString(), self._ttl_s],
        )
        return bool(settled)

    async def finish(self, task: LlmTask) -> None:
        await self._redis.set(f"{generation_key(task)}:done", b"1", ex=self._ttl_s)


class MemoryGenerationLedger:
    """The ledger in memory, for one process (tests, single-worker setups)."""

    def __init__(self) -> None:
        self.attempts: dict[str, int] = {}
        self.results: dict[str, LlmResult] = {}
        self.done: set[str] = set()

    async def begin(self, task: LlmTask) -> Begun:
        key = generation_key(task)
        if key in self.done:
            return None
        if key in self.results:
            return self.results[key]
        self.attempts[key] = self.attempts.get(key, 0) + 1
        return self.attempts[key]

    async def settle(self, task: LlmTask, attempt: int, result: LlmResult) -> bool:
        key = generation_key(task)
        if self.attempts.get(key, 0) > attempt:
            return False
        self.results.setdefault(key, result)
        return True

    async def finish(self, task: LlmTask) -> None:
        self.done.add(generation_key(task))
