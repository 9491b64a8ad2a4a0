"""Handling one raw Kafka record of a `ConcurrentConsumer`: its trace, its payload, its
dead letter. Shared by every service that consumes with the concurrent consumer."""

import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker
from google.protobuf.message import Message
from opentelemetry import propagate, trace

from switchboard.common.consumer import DeadLetterSink, Record
from switchboard.common.envelope import PoisonMessageError, decode
from switchboard.common.kafka import publish_dead_letter
from switchboard.common.retry import retrying

M = TypeVar("M", bound=Message)
log = logging.getLogger(__name__)


def record_headers(record: Record) -> dict[str, str]:
    """A record's headers as text."""
    return {key: value.decode("utf-8", "replace") for key, value in record.headers or ()}


@contextmanager
def consumer_span(tracer: trace.Tracer, record: Record, group_id: str) -> Iterator[trace.Span]:
    """A CONSUMER span that continues the trace carried in the record's headers."""
    with tracer.start_as_current_span(
        f"{record.topic} process",
        context=propagate.extract(record_headers(record)),
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": record.topic,
            "messaging.destination.partition.id": str(record.partition),
            "messaging.kafka.offset": record.offset,
            "messaging.consumer.group.name": group_id,
        },
    ) as span:
        yield span


async def dead_letter_record(
    broker: KafkaBroker,
    record: Record,
    error: str,
    *,
    group_id: str,
    attempts: int,
    backoff_max_s: float,
) -> None:
    """Park a record that can never be processed, with the reason, on `<topic>.dlq`
    (bounded retries: the record is committed only once its letter is out)."""
    async for step in retrying(attempts, backoff_max_s, (KafkaError, TimeoutError)):
        with step:
            await publish_dead_letter(broker, record, error, consumer_group=group_id)


async def decode_or_dead_letter_record(
    broker: KafkaBroker,
    record: Record,
    message_type: type[M],
    *,
    group_id: str,
    attempts: int,
    backoff_max_s: float,
    problem_of: Callable[[M], str | None] | None = None,
) -> M | None:
    """The record's payload; None when it cannot be decoded (or `problem_of` names what is
    wrong with it), in which case it is dead-lettered and the current span marked poison."""
    try:
        message = decode(record.value or b"", record_headers(record), message_type)
        problem = problem_of(message) if problem_of is not None else None
    except PoisonMessageError as exc:
        problem = str(exc)
    if problem is None:
        return message
    trace.get_current_span().set_attribute("error.type", "poison")
    await dead_letter_record(
        broker,
        record,
        problem,
        group_id=group_id,
        attempts=attempts,
        backoff_max_s=backoff_max_s,
    )
    return None


Notify = Callable[[Record, str], Awaitable[None]]


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
        await dead_letter_record(
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
