"""Pieces of the concurrent consumer that need no Kafka: capacity and partition ownership."""

import asyncio

from aiokafka import TopicPartition

from switchboard.common.consumer import Capacity, ConcurrentConsumer, Lease, Record
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
