"""Gateway replicas: heartbeats in Redis, and cleanup of the reply topics of dead ones.

Each instance owns a reply topic (`<prefix>chat.replies.<instance>`) and keeps a heartbeat
key for it in Redis. Periodically one live instance (whoever takes the sweep lock) lists the
reply topics of its deployment and deletes those whose heartbeat has been missing for a grace
period, so that a crashed pod's topic does not live forever. Requests a dead instance owned
are reported to their retries as gone (see `requests`).
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from switchboard.gateway.metrics import SWEPT

log = logging.getLogger(__name__)


def heartbeat_key(reply_topic: str) -> str:
    """The Redis key that says the owner of `reply_topic` is alive."""
    return f"sb:gateway:alive:{reply_topic}"


class Heartbeats:
    """This instance's heartbeat, and the liveness of the others."""

    def __init__(self, redis: Redis, reply_topic: str, ttl_s: float) -> None:
        self._redis = redis
        self._reply_topic = reply_topic
        self._ttl_ms = int(ttl_s * 1000)

    async def beat(self) -> None:
        """Say this instance is alive for another TTL."""
        await self._redis.set(heartbeat_key(self._reply_topic), b"1", px=self._ttl_ms)

    async def stop(self) -> None:
        """This instance is going away on purpose."""
        await self._redis.delete(heartbeat_key(self._reply_topic))

    async def alive(self, reply_topic: str) -> bool:
        """Whether the owner of `reply_topic` beat within its TTL (unknown counts as alive)."""
        if reply_topic == self._reply_topic:
            return True
        try:
            return bool(await self._redis.exists(heartbeat_key(reply_topic)))
        except RedisError:
            return True  # never declare another instance dead on our own failure

    async def dead_among(self, reply_topics: Iterable[str]) -> set[str]:
        """The topics whose owner has no heartbeat."""
        topics = [t for t in reply_topics if t != self._reply_topic]
        if not topics:
            return set()
        async with self._redis.pipeline(transaction=False) as pipe:
            for topic in topics:
                pipe.exists(heartbeat_key(topic))
            answers = await pipe.execute()
        return {topic for topic, alive in zip(topics, answers, strict=True) if not alive}

    async def take_sweep_turn(self, topic_prefix: str, interval_s: float) -> bool:
        """Whether this instance sweeps now: one sweep per interval across all replicas."""
        key = f"sb:gateway:sweep:{topic_prefix}chat.replies"
        return bool(
            await self._redis.set(key, self._reply_topic, nx=True, px=int(interval_s * 1000))
        )


class TopicAdmin(Protocol):
    """Lists and deletes reply topics (Kafka's admin API in production)."""

    async def list_topics(self) -> list[str]: ...

    async def delete_topics(self, topics: list[str]) -> None: ...


class ReplyTopicSweeper:
    """Deletes the reply topics of instances that stayed dead for a grace period.

    The grace lets the generations a crashed instance started run out: workers keep
    publishing its replies until they finish, and publishing to a deleted topic stalls them.
    A topic must also be seen dead on two sweeps, so that one created just before its owner's
    first beat, or whose heartbeat was lost with a Redis restart, is spared.
    """

    def __init__(
        self,
        admin: TopicAdmin,
        heartbeats: Heartbeats,
        reply_topic_prefix: str,
        grace_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._admin = admin
        self._heartbeats = heartbeats
        self._prefix = reply_topic_prefix
        self._grace_s = grace_s
        self._clock = clock
        self._dead_since: dict[str, float] = {}

    async def sweep(self) -> list[str]:
        """One sweep; returns the topics deleted."""
        topics = [t for t in await self._admin.list_topics() if t.startswith(self._prefix)]
        dead = await self._heartbeats.dead_among(topics)
        now = self._clock()
        first_seen = {topic: self._dead_since.get(topic, now) for topic in dead}
        doomed = sorted(
            topic
            for topic, since in first_seen.items()
            if topic in self._dead_since and now - since >= self._grace_s
        )
        self._dead_since = {t: since for t, since in first_seen.items() if t not in doomed}
        if doomed:
            await self._admin.delete_topics(doomed)
            SWEPT.inc(len(doomed))
            log.info("deleted abandoned reply topics: %s", ", ".join(doomed))
        return doomed


async def run_heartbeats(
    heartbeats: Heartbeats,
    sweeper: ReplyTopicSweeper,
    *,
    topic_prefix: str,
    heartbeat_interval_s: float,
    sweep_interval_s: float,
    recover: Callable[[], Awaitable[None]],
) -> None:
    """Beat every interval and sweep when it is this instance's turn; runs until cancelled.

    After beats failed (Redis unreachable) the others may have taken this instance for dead
    and deleted its reply topic: `recover` (re-creating the topic) runs on the first beat
    that succeeds again.
    """
    loop = asyncio.get_running_loop()
    next_sweep = loop.time() + sweep_interval_s
    missed = False
    while True:
        try:
            await heartbeats.beat()
            if missed:
                log.info("heartbeat restored; making sure the reply topic exists")
                await recover()
                missed = False
            if loop.time() >= next_sweep:
                next_sweep = loop.time() + sweep_interval_s
                if await heartbeats.take_sweep_turn(topic_prefix, sweep_interval_s):
                    await sweeper.sweep()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failed beat or sweep must not stop the next one
            missed = True
            log.warning("heartbeat or reply-topic sweep failed: %s", exc)
        await asyncio.sleep(heartbeat_interval_s)
