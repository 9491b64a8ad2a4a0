"""Heartbeats in a real Redis; the sweeper with a fake Kafka admin."""

import asyncio
import contextlib
import uuid

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from switchboard.gateway.instances import (
    Heartbeats,
    ReplyTopicSweeper,
    heartbeat_key,
    run_heartbeats,
)


class FakeAdmin:
    def __init__(self, topics: list[str]) -> None:
        self.topics = topics
        self.deleted: list[str] = []

    async def list_topics(self) -> list[str]:
        return list(self.topics)

    async def delete_topics(self, topics: list[str]) -> None:
        self.deleted += topics
        self.topics = [t for t in self.topics if t not in topics]


async def test_only_topics_dead_for_the_grace_and_on_two_sweeps_are_deleted(
    redis: Redis,
) -> None:
    prefix = f"unit-{uuid.uuid4().hex[:8]}.chat.replies."
    mine, alive, dead, late = (prefix + n for n in ("me", "alive", "dead", "late"))
    unrelated = f"other.{prefix}x"
    me = Heartbeats(redis, mine, ttl_s=30)
    other = Heartbeats(redis, alive, ttl_s=30)
    admin = FakeAdmin([mine, alive, dead, late, unrelated, prefix.removesuffix(".")])
    now = [1000.0]
    sweeper = ReplyTopicSweeper(admin, me, prefix, grace_s=60, clock=lambda: now[0])
    try:
        await me.beat()
        await other.beat()
        assert await sweeper.sweep() == []  # `dead` and `late` are first seen dead
        now[0] += 30
        assert await sweeper.sweep() == [], "dead for less than the grace"
        # `late` was starting up: it beats before the grace is over and is spared.
        await Heartbeats(redis, late, ttl_s=30).beat()
        now[0] += 30
        assert await sweeper.sweep() == [dead]
        assert admin.topics == [mine, alive, late, unrelated, prefix.removesuffix(".")]
        assert await me.alive(alive) and not await me.alive(dead)
        await other.stop()
        assert not await me.alive(alive)
    finally:
        await redis.delete(*(heartbeat_key(t) for t in (mine, alive, late)))


async def test_without_a_grace_two_sweeps_are_still_needed(redis: Redis) -> None:
    prefix = f"unit-{uuid.uuid4().hex[:8]}.chat.replies."
    admin = FakeAdmin([prefix + "dead"])
    sweeper = ReplyTopicSweeper(admin, Heartbeats(redis, prefix + "me", 30), prefix, grace_s=0)
    assert await sweeper.sweep() == []
    assert await sweeper.sweep() == [prefix + "dead"]


async def test_one_replica_sweeps_per_interval(redis: Redis) -> None:
    prefix = f"unit-{uuid.uuid4().hex[:8]}."
    a = Heartbeats(redis, f"{prefix}chat.replies.a", ttl_s=30)
    b = Heartbeats(redis, f"{prefix}chat.replies.b", ttl_s=30)
    try:
        assert await a.take_sweep_turn(prefix, 30) is True
        assert await b.take_sweep_turn(prefix, 30) is False
    finally:
        await redis.delete(f"sb:gateway:sweep:{prefix}chat.replies")


async def test_a_replica_whose_beats_failed_recreates_its_topic_when_they_work_again() -> None:
    class FlakyBeats:
        def __init__(self) -> None:
            self.calls = 0

        async def beat(self) -> None:
            self.calls += 1
            if self.calls == 2:
                raise RedisConnectionError("Redis restarting")

    beats = FlakyBeats()
    recovered: list[int] = []

    async def recover() -> None:
        recovered.append(beats.calls)

    task = asyncio.create_task(
        run_heartbeats(
            beats,  # type: ignore[arg-type]
            ReplyTopicSweeper(FakeAdmin([]), beats, "x", 0),  # type: ignore[arg-type]
            topic_prefix="",
            heartbeat_interval_s=0.01,
            sweep_interval_s=3600,
            recover=recover,
        )
    )
    try:
        for _ in range(200):
            if beats.calls >= 5:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert recovered == [3], "recovered once, on the first beat after the failure"
