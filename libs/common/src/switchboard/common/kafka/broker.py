"""The FastStream broker every service shares, and its simple at-least-once subscribers."""

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from faststream.kafka import KafkaBroker
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.middlewares import AckPolicy
from opentelemetry.sdk.trace import TracerProvider

from switchboard.common.settings import KafkaSettings


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
