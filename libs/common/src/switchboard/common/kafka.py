"""The Kafka adapter every service shares: broker factory, typed publish, dead letters."""

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka import AIOKafkaProducer
from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.middlewares import AckPolicy
from google.protobuf.message import Message
from opentelemetry import propagate
from opentelemetry.sdk.trace import TracerProvider

from switchboard.common import topics
from switchboard.common.consumer import Record
from switchboard.common.envelope import M, PoisonMessageError, decode, headers_for
from switchboard.common.settings import KafkaSettings
from switchboard.v1.events_pb2 import DeadLetter

log = logging.getLogger(__name__)


def create_broker(
    settings: KafkaSettings, client_id: str, tracer_provider: TracerProvider
) -> KafkaBroker:
    """A broker that acknowledges writes on all replicas and propagates trace context."""
    return KafkaBroker(
        settings.bootstrap_servers,
        client_id=client_id,
        request_timeout_ms=settings.request_timeout_ms,
        retry_backoff_ms=settings.retry_backoff_ms,
        linger_ms=settings.linger_ms,
        max_batch_size=settings.max_batch_size,
        max_request_size=settings.max_request_size,
        acks="all",
        # Not idempotent: aiokafka's idempotent producer stops for good with
        # OutOfOrderSequenceNumber once a batch expires while a partition has no leader
        # (aio-libs/aiokafka#1017, found by tests/e2e/test_faults.py). Ordering holds anyway
        # (aiokafka sends one batch per partition at a time); a rare duplicate on retry is
        # absorbed by the idempotent consumers.
        enable_idempotence=False,
        middlewares=[KafkaTelemetryMiddleware(tracer_provider=tracer_provider)],
        logger=logging.getLogger(f"switchboard.kafka.{client_id}"),
        log_level=logging.DEBUG,
    )


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[None]])


def durable_subscriber(
    broker: KafkaBroker, topic: str, group_id: str
) -> Callable[[Handler], Handler]:
    """Subscribe `group_id` to `topic` with at-least-once delivery.

    The offset is committed only after the handler returned; a handler that raises
    (after its own bounded retries) hands the record back to Kafka (NACK) so it is
    processed again, never skipped. Poison records are dead-lettered by the handler.
    """
    subscriber = broker.subscriber(
        topic,
        group_id=group_id,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
    )

    def register(handler: Handler) -> Handler:
        subscriber(handler)
        return handler

    return register


async def publish(
    broker: KafkaBroker, topic: str, message: Message, *, key: str, tenant_id: str | None = None
) -> None:
    """Publish a protobuf payload with its envelope headers and wait for the broker's ack."""
    await broker.publish(
        message.SerializeToString(),
        topic,
        key=key.encode(),
        headers=headers_for(message, tenant_id),
    )


async def decode_or_dead_letter(
    broker: KafkaBroker, record: KafkaMessage, message_type: type[M], *, consumer_group: str
) -> M | None:
    """Decode a consumed record; a poison record goes to its dead-letter topic and gives None."""
    try:
        return decode(record.body, dict(record.headers), message_type)
    except PoisonMessageError as exc:
        await send_dead_letter(broker, record, str(exc), consumer_group=consumer_group)
        return None


async def send_dead_letter(
    broker: KafkaBroker, record: KafkaMessage, error: str, *, consumer_group: str
) -> None:
    """Park a record that cannot be processed, with the reason, so the consumer carries on."""
    raw = record.raw_message
    assert not isinstance(raw, tuple), "batch records are not dead-lettered whole"
    await publish_dead_letter(broker, raw, error, consumer_group=consumer_group)


async def publish_dead_letter(
    broker: KafkaBroker, record: Record, error: str, *, consumer_group: str
) -> None:
    """Publish `record` with the reason on `<its topic>.dlq`."""
    letter = DeadLetter(
        source_topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key or b"",
        value=record.value or b"",
        error=error,
        consumer_group=consumer_group,
    )
    log.warning(
        "dead-lettering %s[%d]@%d: %s", record.topic, record.partition, record.offset, error
    )
    await publish(
        broker,
        topics.dead_letter(record.topic),
        letter,
        key=(record.key or b"").decode("utf-8", "replace"),
    )


class StreamPublisher:
    """Publishes streams of small events (reply deltas) on a plain aiokafka producer.

    The W3C trace context still travels in each record's headers, but no span is made per
    record: a reply has dozens of deltas, and FastStream's per-message middleware (two spans,
    logging) cost more CPU than the relay itself. Writes are acknowledged by all replicas, as
    with `create_broker`.
    """

    def __init__(self, settings: KafkaSettings, client_id: str) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers,
            client_id=client_id,
            acks="all",
            enable_idempotence=False,  # see create_broker
            linger_ms=settings.linger_ms,
            max_batch_size=settings.max_batch_size,
            max_request_size=settings.max_request_size,
            request_timeout_ms=settings.request_timeout_ms,
            retry_backoff_ms=settings.retry_backoff_ms,
        )

    async def start(self) -> None:
        """Connect."""
        await self._producer.start()

    async def stop(self) -> None:
        """Flush and disconnect."""
        await self._producer.stop()

    async def publish(
        self, topic: str, message: Message, *, key: str, tenant_id: str | None = None
    ) -> None:
        """Publish with envelope and trace headers and wait for the broker's ack."""
        headers = headers_for(message, tenant_id)
        propagate.inject(headers)
        await self._producer.send_and_wait(
            topic,
            message.SerializeToString(),
            key=key.encode(),
            headers=[(name, value.encode()) for name, value in headers.items()],
        )
