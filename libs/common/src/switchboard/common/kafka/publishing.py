"""Publishing protobuf payloads with their envelope headers: one `Publisher` interface, two
ways to send (through the FastStream broker, or a plain producer for streams of events)."""

from typing import Protocol

from aiokafka import AIOKafkaProducer
from faststream.kafka import KafkaBroker
from google.protobuf.message import Message

from switchboard.common.envelope import headers_for
from switchboard.common.kafka.tracing import inject_context
from switchboard.common.settings import KafkaSettings


class Publisher(Protocol):
    """Publishes a payload keyed by `key` and returns once the brokers acknowledged it."""

    async def publish(
        self, topic: str, message: Message, *, key: str, tenant_id: str | None = None
    ) -> None: ...


class BrokerPublisher:
    """Publishes through the FastStream broker (writes acknowledged by all replicas, a span
    per record from the broker's telemetry middleware)."""

    def __init__(self, broker: KafkaBroker) -> None:
        self.broker = broker

    async def publish(
        self, topic: str, message: Message, *, key: str, tenant_id: str | None = None
    ) -> None:
        """Publish with the envelope headers and wait for the broker's ack."""
        await self.broker.publish(
            message.SerializeToString(),
            topic,
            key=key.encode(),
            headers=headers_for(message, tenant_id),
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
        inject_context(headers)
        await self._producer.send_and_wait(
            topic,
            message.SerializeToString(),
            key=key.encode(),
            headers=[(name, value.encode()) for name, value in headers.items()],
        )
