"""What a `ConcurrentConsumer` handler sees: the record, the lease on its partition, and the
errors that tell the consumer what became of it."""

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from aiokafka import TopicPartition


class Record(Protocol):
    """What the worker reads of a consumed record (aiokafka's `ConsumerRecord`)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


class PartitionLostError(Exception):
    """The record's partition went to another member: its work must not be made visible."""


class UnprocessableError(Exception):
    """The record can never be processed (bad data or configuration): retrying is pointless,
    so it goes to its dead-letter sink at once, with this message."""


class Owner(Protocol):
    """Whoever knows whether a partition is still ours (the consumer)."""

    async def owns(self, tp: TopicPartition) -> bool: ...


class Lease:
    """A running record's hold on its partition."""

    def __init__(self, owner: Owner, tp: TopicPartition) -> None:
        self._owner = owner
        self._tp = tp

    async def held(self) -> bool:
        """Whether this consumer still owns the partition, once any rebalance settled
        (bounded wait; False when it does not settle in time)."""
        return await self._owner.owns(self._tp)


Handler = Callable[[Record, Lease], Awaitable[None]]
# Parks a record given up on, with the error (its `.dlq` topic) and tells whoever waits on
# it; raising leaves the record to be fetched again (Kafka itself is away).
DeadLetterSink = Callable[[Record, str], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]
