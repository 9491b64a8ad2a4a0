"""Pieces of the concurrent consumer that need no Kafka: capacity and partition ownership."""

import asyncio

from aiokafka import TopicPartition

from switchboard.common.settings import KafkaSettings
from switchboard.llm_worker.consumer import Capacity, ConcurrentConsumer, Lease, Record

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
