"""The concurrent consumer without Kafka: capacity, partition ownership, key order, retries
and dead letters, and (against a fake aiokafka consumer) dispatch when full, re-fetch and
cancel-on-reassign."""

import asyncio
from collections.abc import Awaitable, Callable

from aiokafka import TopicPartition
from prometheus_client import REGISTRY

from switchboard.common.consumer import (
    Capacity,
    ConcurrentConsumer,
    Lease,
    Record,
    RetryPolicy,
    UnprocessableError,
)
from switchboard.common.settings import KafkaSettings

TP0, TP1 = TopicPartition("t", 0), TopicPartition("t", 1)


async def nothing(record: Record, lease: Lease) -> None:
    pass


def unstarted(rebalance_wait_s: float = 5.0) -> ConcurrentConsumer:
    return ConcurrentConsumer(
        topics=["t"],
        group_id="g",
        client_id="c",
        kafka=KafkaSettings(),
        handler=nothing,
        capacity=Capacity(2),
        rebalance_wait_s=rebalance_wait_s,
    )


async def test_capacity_counts_and_wakes_waiters() -> None:
    capacity = Capacity(1)
    capacity.take()
    assert capacity.free == 0
    waiter = asyncio.create_task(capacity.wait_free(5))
    await asyncio.sleep(0)
    assert not waiter.done()
    capacity.give()
    await asyncio.wait_for(waiter, 1)
    assert capacity.free == 1
    await capacity.wait_free(0.01)  # free: returns at once


async def test_ownership_is_known_once_a_rebalance_settles() -> None:
    consumer = unstarted()
    consumer.partitions_assigned({TP0, TP1})
    assert await Lease(consumer, TP0).held()

    await consumer.partitions_revoked({TP0, TP1})
    kept, moved = (
        asyncio.create_task(Lease(consumer, TP0).held()),
        asyncio.create_task(Lease(consumer, TP1).held()),
    )
    await asyncio.sleep(0.01)
    assert not kept.done() and not moved.done(), "they wait for the new assignment"
    consumer.partitions_assigned({TP0})
    assert await kept is True
    assert await moved is False


async def test_ownership_is_denied_when_a_rebalance_does_not_settle_in_time() -> None:
    consumer = unstarted(rebalance_wait_s=0.01)
    consumer.partitions_assigned({TP0})
    await consumer.partitions_revoked({TP0})
    assert not await Lease(consumer, TP0).held()


class FakeRecord:
    def __init__(self, offset: int, key: bytes) -> None:
        self.topic, self.partition, self.offset, self.key = "t", 0, offset, key
        self.value: bytes | None = b""
        self.headers: list[tuple[str, bytes]] = []


async def test_records_of_one_key_run_in_order_while_other_keys_run_at_once() -> None:
    started: list[int] = []
    release = {0: asyncio.Event(), 1: asyncio.Event(), 2: asyncio.Event()}

    async def handler(record: Record, lease: Lease) -> None:
        started.append(record.offset)
        await release[record.offset].wait()

    consumer = ConcurrentConsumer(
        topics=["t"],
        group_id="g",
        client_id="c",
        kafka=KafkaSettings(),
        handler=handler,
        capacity=Capacity(3),
        ordered_by_key=True,
    )
    consumer.partitions_assigned({TP0})
    consumer._dispatch(TP0, [FakeRecord(0, b"a"), FakeRecord(1, b"b"), FakeRecord(2, b"a")])
    for _ in range(5):
        await asyncio.sleep(0)
    assert started == [0, 1], "offset 2 waits for offset 0, its key's earlier record"
    release[1].set()
    release[2].set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert started == [0, 1]
    release[0].set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert started == [0, 1, 2]
    assert consumer.running == 0


def retrying_consumer(
    handler: Callable[[Record, Lease], Awaitable[None]],
    dead: list[tuple[int, str]],
    pauses: list[float],
    *,
    max_attempts: int = 3,
) -> ConcurrentConsumer:
    async def dead_letter(record: Record, error: str) -> None:
        dead.append((record.offset, error))

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        await asyncio.sleep(0)

    return ConcurrentConsumer(
        topics=["t"],
        group_id="g",
        client_id="c",
        kafka=KafkaSettings(),
        handler=handler,
        capacity=Capacity(4),
        ordered_by_key=True,
        retry=RetryPolicy(max_attempts=max_attempts, backoff_initial_s=1.0, backoff_max_s=3.0),
        dead_letter=dead_letter,
        sleep=sleep,
    )


async def settle(consumer: ConcurrentConsumer) -> None:
    for _ in range(200):
        if consumer.running == 0:
            return
        await asyncio.sleep(0)
    raise AssertionError("records still running")


async def test_a_record_that_always_fails_is_dead_lettered_after_its_attempts() -> None:
    attempts: list[int] = []

    async def handler(record: Record, lease: Lease) -> None:
        attempts.append(record.offset)
        if record.offset == 0:
            raise ValueError("tool url has port 99999")

    dead: list[tuple[int, str]] = []
    pauses: list[float] = []
    consumer = retrying_consumer(handler, dead, pauses)
    consumer.partitions_assigned({TP0})
    before = (
        REGISTRY.get_sample_value("switchboard_dead_letters_total", {"topic": "t", "group": "g"})
        or 0.0
    )
    consumer._dispatch(TP0, [FakeRecord(0, b"a"), FakeRecord(1, b"b")])
    await settle(consumer)

    assert attempts.count(0) == 3, "bounded: three attempts, then it is given up"
    assert dead == [(0, "ValueError: tool url has port 99999")]
    # Backoff doubles (1 s, then 2 s) and is jittered over the upper half of each pause.
    assert len(pauses) == 2 and 0.5 <= pauses[0] <= 1.0 and 1.0 <= pauses[1] <= 2.0
    assert consumer._offsets[TP0].to_commit() == 2, "the partition moves on past it"
    after = REGISTRY.get_sample_value(
        "switchboard_dead_letters_total", {"topic": "t", "group": "g"}
    )
    assert after == before + 1


async def test_an_unprocessable_record_is_dead_lettered_at_once() -> None:
    async def handler(record: Record, lease: Lease) -> None:
        raise UnprocessableError("tenant t1: tools[0].url: port out of range")

    dead: list[tuple[int, str]] = []
    pauses: list[float] = []
    consumer = retrying_consumer(handler, dead, pauses)
    consumer.partitions_assigned({TP0})
    consumer._dispatch(TP0, [FakeRecord(0, b"a")])
    await settle(consumer)
    assert dead == [(0, "tenant t1: tools[0].url: port out of range")]
    assert pauses == []


async def test_a_failed_record_keeps_its_place_before_the_next_of_its_key() -> None:
    """Finding 4: the next record of a key must not run before the retry of a failed one."""
    order: list[str] = []
    failed_once: set[int] = set()

    async def handler(record: Record, lease: Lease) -> None:
        if record.offset == 0 and 0 not in failed_once:
            failed_once.add(0)
            order.append("0 failed")
            raise ConnectionError("MongoDB away")
        order.append(f"{record.offset} done")

    dead: list[tuple[int, str]] = []
    consumer = retrying_consumer(handler, dead, [])
    consumer.partitions_assigned({TP0})
    consumer._dispatch(TP0, [FakeRecord(0, b"a"), FakeRecord(1, b"a")])
    await settle(consumer)
    assert order == ["0 failed", "0 done", "1 done"]
    assert dead == []
    assert consumer._offsets[TP0].to_commit() == 2


# ---- the consumer against a fake Kafka consumer: dispatch, re-fetch, reassignment ----


class FakeKafka:
    """Stands in for aiokafka's consumer: partitions of records, a fetch position per
    partition (moved by `seek`), pausing, and the commits asked for."""

    def __init__(self, records: dict[TopicPartition, list[FakeRecord]]) -> None:
        self.records = records
        self.position = {tp: 0 for tp in records}
        self.paused: set[TopicPartition] = set()
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.commits: list[dict[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return set(self.records)

    def pause(self, *tps: TopicPartition) -> None:
        self.paused |= set(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused -= set(tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))
        self.position[tp] = offset

    async def getmany(
        self, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[FakeRecord]]:
        await asyncio.sleep(0.001)
        batch: dict[TopicPartition, list[FakeRecord]] = {}
        room = max_records if max_records is not None else 1_000
        for tp, records in self.records.items():
            if tp in self.paused or room <= 0:
                continue
            taken = records[self.position[tp] :][:room]
            if taken:
                batch[tp] = taken
                self.position[tp] += len(taken)
                room -= len(taken)
        return batch

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(2_000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the condition never held")


def fetching(
    handler: Callable[[Record, Lease], Awaitable[None]],
    kafka: FakeKafka,
    capacity: int,
    *,
    dead_letter: Callable[[Record, str], Awaitable[None]] | None = None,
    max_attempts: int = 3,
) -> ConcurrentConsumer:
    consumer = ConcurrentConsumer(
        topics=["t"],
        group_id="g",
        client_id="c",
        kafka=KafkaSettings(),
        handler=handler,
        capacity=Capacity(capacity),
        poll_timeout_ms=1,
        retry_backoff_s=0.0,
        retry=RetryPolicy(max_attempts=max_attempts, backoff_initial_s=0.0, backoff_max_s=0.0),
        dead_letter=dead_letter,
    )
    consumer._consumer = kafka  # type: ignore[assignment]
    consumer.partitions_assigned(set(kafka.records))
    return consumer


async def test_a_full_consumer_hands_back_what_it_cannot_run_and_pauses() -> None:
    """Dispatch when full: records beyond the capacity are fetched again later, not lost."""
    started: list[int] = []
    gate = asyncio.Event()

    async def handler(record: Record, lease: Lease) -> None:
        started.append(record.offset)
        await gate.wait()

    kafka = FakeKafka({TP0: [FakeRecord(n, b"k%d" % n) for n in range(3)]})
    consumer = fetching(handler, kafka, capacity=2)
    # Three records arrive at once (as they can while paused) for two free slots.
    consumer._dispatch(TP0, kafka.records[TP0])
    assert started == [] and consumer.running == 2
    assert kafka.seeks == [(TP0, 2)], "the third goes back to be fetched again"
    loop = asyncio.create_task(consumer._fetch_loop())
    try:
        await until(lambda: TP0 in kafka.paused)
        assert consumer.running == 2, "no third record runs while the slots are taken"
        gate.set()
        await until(lambda: sorted(started) == [0, 1, 2] and consumer.running == 0)
        assert not kafka.paused, "fetching resumed once slots were free"
        assert consumer._offsets[TP0].to_commit() == 3
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


async def test_a_record_whose_dead_letter_failed_is_fetched_again() -> None:
    """Re-fetch: a record that could not be set aside is not skipped; the commit waits."""
    runs: list[int] = []
    letters: list[int] = []

    async def handler(record: Record, lease: Lease) -> None:
        runs.append(record.offset)
        if record.offset == 0:
            raise ValueError("never works")

    async def dead_letter(record: Record, error: str) -> None:
        letters.append(record.offset)
        if len(letters) == 1:
            raise ConnectionError("Kafka away: the letter was not written")

    kafka = FakeKafka({TP0: [FakeRecord(0, b"a"), FakeRecord(1, b"b")]})
    consumer = fetching(handler, kafka, capacity=4, dead_letter=dead_letter, max_attempts=1)
    loop = asyncio.create_task(consumer._fetch_loop())
    try:
        await until(lambda: len(letters) == 2 and consumer.running == 0)
        assert (TP0, 0) in kafka.seeks, "fetched again from the record that failed"
        assert runs.count(0) == 2 and runs.count(1) == 1, "offset 1 is recognised, not rerun"
        await consumer.commit()
        assert kafka.commits[-1] == {TP0: 2}
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


async def test_records_of_a_partition_that_moved_are_cancelled_uncommitted() -> None:
    """Cancel on reassign: a partition that came back keeps running, one that went to
    another member has its running records cancelled and nothing of it committed."""
    started: list[int] = []
    cancelled: list[int] = []
    finished: list[int] = []
    gate = asyncio.Event()

    async def handler(record: Record, lease: Lease) -> None:
        started.append(record.partition)
        try:
            await gate.wait()
        except asyncio.CancelledError:
            cancelled.append(record.partition)
            raise
        finished.append(record.partition)

    one = FakeRecord(0, b"a")
    one.partition = 1
    kafka = FakeKafka({TP0: [FakeRecord(0, b"a")], TP1: [one]})
    consumer = fetching(handler, kafka, capacity=4)
    consumer._dispatch(TP0, kafka.records[TP0])
    consumer._dispatch(TP1, kafka.records[TP1])
    await until(lambda: sorted(started) == [0, 1])

    await consumer.partitions_revoked({TP0, TP1})
    # Nothing finished yet: each partition is committed no further than its running record.
    assert kafka.commits == [{TP0: 0, TP1: 0}]
    consumer.partitions_assigned({TP1})  # TP0 went to another member
    await until(lambda: cancelled == [0])
    gate.set()
    await until(lambda: consumer.running == 0)
    assert finished == [1]
    assert consumer.assignment == {TP1} and TP0 not in consumer._offsets
    await consumer.commit()
    assert kafka.commits[1:] == [{TP1: 1}], "TP0 is left to its new owner"
