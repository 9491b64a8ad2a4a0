"""How far a consumer goes: the retry policy of a failing record, and the capacity (records
running at once) its process shares."""

import asyncio
import contextlib
import random
from dataclasses import dataclass

from switchboard.common.settings import KafkaSettings


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and how far apart, a failing record is tried before it is dead-lettered."""

    max_attempts: int = 8
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0

    @classmethod
    def of(cls, kafka: KafkaSettings) -> "RetryPolicy":
        """The policy the settings describe."""
        return cls(
            kafka.consumer_max_attempts,
            kafka.consumer_backoff_initial_s,
            kafka.consumer_backoff_max_s,
        )

    def pause(self, failed_attempts: int) -> float:
        """The pause after `failed_attempts` failures: exponential, capped, and jittered
        over its upper half (so it never collapses to nothing)."""
        ceiling = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (failed_attempts - 1))
        pause: float = ceiling / 2 + random.uniform(0, ceiling / 2)
        return pause


class Capacity:
    """How many records may run at once, shared by the consumers of a process."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._freed = asyncio.Event()

    @property
    def free(self) -> int:
        """Slots not in use."""
        return self.limit - self.used

    def take(self) -> None:
        """Use one slot."""
        assert self.used < self.limit, "no free slot"
        self.used += 1

    def give(self) -> None:
        """Free one slot."""
        self.used -= 1
        self._freed.set()

    async def wait_free(self, timeout_s: float) -> None:
        """Return when a slot is free, or after `timeout_s`."""
        if self.free > 0:
            return
        self._freed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._freed.wait()
