"""Dead letters: a record that can never be processed is parked, with the reason, on
`<its topic>.dlq` (a `DeadLetter`), so that its consumer carries on; operators replay it
(docs/operations.md)."""

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker
from faststream.kafka.message import KafkaMessage
from google.protobuf.message import Message
from opentelemetry import trace

from switchboard.common import topics
from switchboard.common.consumer import DeadLetterSink, Record
from switchboard.common.envelope import PoisonMessageError, decode
from switchboard.common.kafka.publishing import BrokerPublisher
from switchboard.common.kafka.tracing import record_headers
from switchboard.common.retry import retrying
from switchboard.v1.events_pb2 import DeadLetter

M = TypeVar("M", bound=Message)
log = logging.getLogger(__name__)

# Tells whoever waits on a record given up on (the turn's client).
Notify = Callable[[Record, str], Awaitable[None]]


def _raw(record: Record | KafkaMessage) -> Record:
    """The consumed record itself (a FastStream message wraps aiokafka's)."""
    if isinstance(record, KafkaMessage):
        assert not isinstance(record.raw_message, tuple), (
            "batch records are not dead-lettered whole"
        )
        raw: Record = record.raw_message
        return raw
    return record


async def dead_letter(
    broker: KafkaBroker,
    record: Record | KafkaMessage,
    error: str,
    *,
    group_id: str,
    attempts: int,
    backoff_max_s: float,
) -> None:
    """Park a record that can never be processed, with the reason, on `<topic>.dlq`
    (bounded retries: the record is committed only once its letter is out)."""
    raw = _raw(record)
    letter = DeadLetter(
        source_topic=raw.topic,
        partition=raw.partition,
        offset=raw.offset,
        key=raw.key or b"",
        value=raw.value or b"",
        error=error,
        consumer_group=group_id,
    )
    log.warning("dead-lettering %s[%d]@%d: %s", raw.topic, raw.partition, raw.offset, error)
    publisher = BrokerPublisher(broker)
    async for step in retrying(attempts, backoff_max_s, (KafkaError, TimeoutError)):
        with step:
            await publisher.publish(
                topics.dead_letter(raw.topic),
                letter,
                key=(raw.key or b"").decode("utf-8", "replace"),
            )


async def decode_or_dead_letter(
    broker: KafkaBroker,
    record: Record | KafkaMessage,
    message_type: type[M],
    *,
    group_id: str,
    attempts: int,
    backoff_max_s: float,
    problem_of: Callable[[M], str | None] | None = None,
) -> M | None:
    """The record's payload; None when it cannot be decoded (or `problem_of` names what is
    wrong with it), in which case it is dead-lettered and the current span marked poison."""
    raw = _raw(record)
    try:
        message = decode(raw.value or b"", record_headers(raw), message_type)
        problem = problem_of(message) if problem_of is not None else None
    except PoisonMessageError as exc:
        problem = str(exc)
    if problem is None:
        return message
    trace.get_current_span().set_attribute("error.type", "poison")
    await dead_letter(
        broker, raw, problem, group_id=group_id, attempts=attempts, backoff_max_s=backoff_max_s
    )
    return None


def dead_letter_sink(
    broker: KafkaBroker,
    *,
    group_id: str,
    attempts: int,
    backoff_max_s: float,
    notify: Notify | None = None,
) -> DeadLetterSink:
    """A `ConcurrentConsumer`'s dead-letter sink: the record with its error on `<topic>.dlq`,
    then `notify` (best effort: tell the turn's client), for a record given up on."""

    async def sink(record: Record, error: str) -> None:
        await dead_letter(
            broker,
            record,
            error,
            group_id=group_id,
            attempts=attempts,
            backoff_max_s=backoff_max_s,
        )
        if notify is None:
            return
        try:
            async for step in retrying(attempts, backoff_max_s, (Exception,)):
                with step:
                    await notify(record, error)
        except Exception:
            log.exception(
                "the client of dead-lettered %s@%d was not told", record.topic, record.offset
            )

    return sink
