"""Trace context on Kafka records read or written outside the FastStream broker (whose
telemetry middleware traces its own subscribers and publishes)."""

from collections.abc import Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from typing import Protocol

from opentelemetry import propagate, trace


class _Record(Protocol):
    topic: str
    partition: int
    offset: int
    headers: Sequence[tuple[str, bytes]]


def record_headers(record: _Record) -> dict[str, str]:
    """A record's headers as text."""
    return {key: value.decode("utf-8", "replace") for key, value in record.headers or ()}


def inject_context(headers: MutableMapping[str, str]) -> None:
    """Add the current W3C trace context to the headers of a record about to be sent."""
    propagate.inject(headers)


@contextmanager
def consumer_span(tracer: trace.Tracer, record: _Record, group_id: str) -> Iterator[trace.Span]:
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
