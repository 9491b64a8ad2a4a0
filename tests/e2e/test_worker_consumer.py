"""The worker's concurrent consumer against the real Kafka: bounded concurrency, commits of
finished prefixes only, redelivery after a crash, and rebalances without lost or repeated work."""

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from switchboard.common.consumer import (
    Capacity,
    ConcurrentConsumer,
    Lease,
    PartitionLostError,
    Record,
)
from switchboard.common.settings import KafkaSettings

from .conftest import KAFKA

pytestmark = pytest.mark.e2e
WAIT_S = 30.0
# Short sessions so that a member that leaves is noticed quickly.
SETTINGS = KafkaSettings(
    bootstrap_servers=KAFKA, session_timeout_ms=6_000, heartbeat_interval_ms=500
)


class Work:
    """A handler whose records finish when the test says so."""

    def __init__(self, name: str, auto: bool = False, fail_once: set[int] | None = None) -> None:
        self.name = name
        self.auto = auto
        self.fail_once = set(fail_once or ())  # offsets of partition 0 that fail at first
        self.release: dict[int, asyncio.Event] = {}
        self.started: list[tuple[int, int]] = []
        self.finished: list[tuple[int, int]] = []
        self.running = 0
        self.most_running = 0

    def gate(self, partition: int, offset: int) -> asyncio.Event:
        return self.release.setdefault(partition * 1_000_000 + offset, asyncio.Event())

    def finish(self, partition: int, offset: int) -> None:
        self.gate(partition, offset).set()

    async def __call__(self, record: Record, lease: Lease) -> None:
        self.started.append((record.partition, record.offset))
        if record.partition == 0 and record.offset in self.fail_once:
            self.fail_once.discard(record.offset)
            if record.offset == 0:
                raise RuntimeError("the backend is away")
            raise PartitionLostError("moved meanwhile")
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if not self.auto:
                await self.gate(record.partition, record.offset).wait()
            else:
                await asyncio.sleep(0.01)
            self.finished.append((record.partition, record.offset))
        finally:
            self.running -= 1


async def until(condition: object, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def topic() -> AsyncIterator[str]:
    name = f"e2e-consumer-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA, request_timeout_ms=10_000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])
        yield name
        await admin.delete_topics([name])
    finally:
        await admin.close()


async def produce(topic: str, per_partition: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA)
    await producer.start()
    try:
        for partition in (0, 1):
            for n in range(per_partition):
                await producer.send_and_wait(topic, f"{n}".encode(), partition=partition)
    finally:
        await producer.stop()


async def committed(topic: str, group: str) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA, group_id=group)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in (0, 1)}
    finally:
        await consumer.stop()


def consumer(topic: str, group: str, work: Work, capacity: int = 64) -> ConcurrentConsumer:
    return ConcurrentConsumer(
        topics=[topic],
        group_id=group,
        client_id=f"test-{work.name}",
        kafka=SETTINGS,
        handler=work,
        capacity=Capacity(capacity),
        poll_timeout_ms=100,
        commit_interval_s=0,
        retry_backoff_s=0.2,
    )


async def test_offsets_are_committed_only_over_finished_prefixes(topic: str) -> None:
    group = f"g-{uuid.uuid4().hex[:8]}"
    await produce(topic, 4)
    work = Work("a")
    running = consumer(topic, group, work)
    await running.start()
    try:
        await until(lambda: len(work.started) == 8, "all records run at once")
        for offset in (1, 2, 3):
            work.finish(0, offset)
        for offset in (0, 1):
            work.finish(1, offset)
        await until(lambda: len(work.finished) == 5, "five finished")
        await until(
            lambda: running._offsets[TopicPartition(topic, 1)].committed == 2, "p1 commits 2"
        )
        assert await committed(topic, group) == {0: 0, 1: 2}, "p0 waits for its offset 0"
        work.finish(0, 0)
        await until(
            lambda: running._offsets[TopicPartition(topic, 0)].committed == 4, "p0 commits 4"
        )
        assert (await committed(topic, group))[0] == 4
    finally:
        for gate in work.release.values():
            gate.set()
        await running.stop(grace_s=5)


async def test_concurrency_is_bounded(topic: str) -> None:
    await produce(topic, 10)
    work = Work("bounded", auto=True)
    running = consumer(topic, f"g-{uuid.uuid4().hex[:8]}", work, capacity=3)
    await running.start()
    try:
        await until(lambda: len(work.finished) == 20, "every record finished")
    finally:
        await running.stop(grace_s=5)
    assert work.most_running <= 3
    assert sorted(work.finished) == [(p, o) for p in (0, 1) for o in range(10)]


async def test_a_crash_redelivers_every_unfinished_record_and_nothing_committed(
    topic: str,
) -> None:
    group = f"g-{uuid.uuid4().hex[:8]}"
    await produce(topic, 3)
    first = Work("first")
    crashed = consumer(topic, group, first)
    await crashed.start()
    await until(lambda: len(first.started) == 6, "all started")
    first.finish(0, 0)
    first.finish(0, 2)  # finished, but after the unfinished offset 1
    first.finish(1, 0)
    first.finish(1, 1)
    first.finish(1, 2)
    await until(lambda: len(first.finished) == 5, "five finished")
    await crashed.stop(grace_s=0)  # (0, 1) is abandoned uncommitted
    assert await committed(topic, group) == {0: 1, 1: 3}

    second = Work("second", auto=True)
    restarted = consumer(topic, group, second)
    await restarted.start()
    try:
        await until(lambda: len(second.finished) == 2, "the rest redelivered")
        assert sorted(second.finished) == [(0, 1), (0, 2)], "from the first unfinished one on"
    finally:
        await restarted.stop(grace_s=5)


async def test_a_rebalance_neither_loses_nor_repeats_finished_work(topic: str) -> None:
    group = f"g-{uuid.uuid4().hex[:8]}"
    await produce(topic, 3)
    work_a = Work("a")
    member_a = consumer(topic, group, work_a)
    await member_a.start()
    await until(lambda: len(work_a.started) == 6, "a runs everything")
    work_a.finish(0, 0)
    work_a.finish(1, 0)
    await until(lambda: len(work_a.finished) == 2, "two finished")

    work_b = Work("b", auto=True)
    member_b = consumer(topic, group, work_b)
    await member_b.start()
    try:
        await until(
            lambda: len(member_a.assignment) == 1 and len(member_b.assignment) == 1,
            "the partitions are shared",
        )
        [kept] = member_a.assignment
        moved = 1 - kept.partition
        # What `a` still runs of the partition it kept goes on, and is not run twice.
        for offset in (1, 2):
            work_a.finish(kept.partition, offset)
        await until(lambda: len(work_b.finished) == 2, "b ran the moved partition's rest")
        await until(
            lambda: (
                Counter(work_a.finished + work_b.finished)
                == Counter({(p, o): 1 for p in (0, 1) for o in range(3)})
            ),
            "every record finished exactly once",
        )
        assert sorted(work_b.finished) == [(moved, 1), (moved, 2)]
        assert Counter(work_a.started)[(kept.partition, 1)] == 1, "not restarted after rebalance"
        await until(
            lambda: (
                member_a._offsets[kept].committed == 3
                and member_b._offsets[TopicPartition(topic, moved)].committed == 3
            ),
            "both partitions committed to the end",
        )
    finally:
        for gate in work_a.release.values():
            gate.set()
        await member_b.stop(grace_s=5)
        await member_a.stop(grace_s=5)


async def test_a_record_that_failed_is_fetched_again_and_holds_the_commit(topic: str) -> None:
    group = f"g-{uuid.uuid4().hex[:8]}"
    await produce(topic, 3)
    work = Work("flaky", auto=True, fail_once={0, 1})
    running = consumer(topic, group, work)
    await running.start()
    try:
        await until(lambda: len(work.finished) == 6, "every record finished")
        await until(
            lambda: running._offsets[TopicPartition(topic, 0)].committed == 3, "p0 committed"
        )
    finally:
        await running.stop(grace_s=5)
    started = Counter(work.started)
    assert started[(0, 0)] == 2 and started[(0, 1)] == 2, "each failed record ran again"
    assert started[(0, 2)] == 1, "the others did not"
    assert sorted(work.finished) == [(p, o) for p in (0, 1) for o in range(3)]
