"""Attempts and completions of generations, shared by every worker through Redis.

A task redelivered after a worker died must know that it is a second attempt (to send
`reset` first and number its events above the first attempt's), and a task whose result was
already published must not run again. The ledger keys a generation by request id and
sequence base rather than task id, so that a task published twice by the orchestrator is
still one generation.
"""

from typing import Protocol

from redis.asyncio import Redis

from switchboard.v1.events_pb2 import LlmTask


def generation_key(task: LlmTask) -> str:
    """The Redis key prefix of the generation `task` asks for."""
    return f"sb:{task.tenant_id}:llm:{task.request_id or task.task_id}:{task.sequence_base}"


class GenerationLedger(Protocol):
    """Where attempts are counted and completions recorded."""

    async def begin(self, task: LlmTask) -> int | None:
        """Count one more attempt; returns its number (1 for the first), or None when the
        generation finished already."""
        ...

    async def finish(self, task: LlmTask) -> None:
        """Record that the generation's result was published."""
        ...


class RedisGenerationLedger:
    """The ledger in Redis, with every key expiring after `ttl_s`."""

    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self._redis = redis
        self._ttl_s = ttl_s

    async def begin(self, task: LlmTask) -> int | None:
        key = generation_key(task)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.exists(f"{key}:done")
            pipe.incr(f"{key}:attempts")
            pipe.expire(f"{key}:attempts", self._ttl_s)
            done, attempt, _ = await pipe.execute()
        return None if done else int(attempt)

    async def finish(self, task: LlmTask) -> None:
        await self._redis.set(f"{generation_key(task)}:done", b"1", ex=self._ttl_s)


class MemoryGenerationLedger:
    """The ledger in memory, for one process (tests, single-worker setups)."""

    def __init__(self) -> None:
        self.attempts: dict[str, int] = {}
        self.done: set[str] = set()

    async def begin(self, task: LlmTask) -> int | None:
        key = generation_key(task)
        self.attempts[key] = self.attempts.get(key, 0) + 1
        return None if key in self.done else self.attempts[key]

    async def finish(self, task: LlmTask) -> None:
        self.done.add(generation_key(task))
