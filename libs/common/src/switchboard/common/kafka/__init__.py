"""The Kafka layer every service shares: one API per concern.

- **Broker** (`broker`): `create_broker` makes the FastStream broker (writes acknowledged by
  all replicas, trace context propagated by its telemetry middleware); `durable_subscriber`
  registers a simple at-least-once subscriber on it.
- **Publishing** (`publishing`): every publisher is a `Publisher`, `publish(topic, message,
  key=, tenant_id=)` with the envelope headers. `BrokerPublisher` goes through the FastStream
  broker (a span per record); `StreamPublisher` is a plain aiokafka producer for streams of
  small events (reply deltas), which carries the trace context without a span per record.
- **Dead-lettering** (`dead_letters`): `dead_letter` parks a record with its error on
  `<topic>.dlq` (bounded retries); `decode_or_dead_letter` decodes a record (a raw aiokafka
  record or a FastStream message) or dead-letters it; `dead_letter_sink` is the
  `ConcurrentConsumer`'s sink.
- **Tracing** (`tracing`): FastStream subscribers and `BrokerPublisher` are traced by the
  broker's middleware; records read with aiokafka directly (`ConcurrentConsumer`) are traced
  with `consumer_span`, and `StreamPublisher` carries the context with `inject_context`.

Where FastStream serves (the broker, simple subscribers, the AsyncAPI document) it is used;
the `ConcurrentConsumer` (`switchboard.common.consumer`) is the documented extension for
topics that need many records at once per partition (docs/architecture.md has the table of
which topic uses which consumer and its commit rule).
"""

from switchboard.common.kafka.broker import create_broker, durable_subscriber
from switchboard.common.kafka.dead_letters import (
    Notify,
    dead_letter,
    dead_letter_sink,
    decode_or_dead_letter,
)
from switchboard.common.kafka.publishing import BrokerPublisher, Publisher, StreamPublisher
from switchboard.common.kafka.tracing import consumer_span, inject_context, record_headers

__all__ = [
    "BrokerPublisher",
    "Notify",
    "Publisher",
    "StreamPublisher",
    "consumer_span",
    "create_broker",
    "dead_letter",
    "dead_letter_sink",
    "decode_or_dead_letter",
    "durable_subscriber",
    "inject_context",
    "record_headers",
]
