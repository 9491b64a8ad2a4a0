"""Logging and OpenTelemetry set-up, one call per process."""

import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from switchboard.common.settings import TelemetrySettings

log = logging.getLogger(__name__)


def setup_telemetry(service_name: str, settings: TelemetrySettings) -> TracerProvider:
    """Configure logging and the global tracer provider for `service_name`."""
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # aiokafka logs every connection hiccup at ERROR; ours say what matters.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )

    def batched(exporter: SpanExporter) -> BatchSpanProcessor:
        return BatchSpanProcessor(
            exporter,
            max_queue_size=settings.batch_max_queue_size,
            schedule_delay_millis=settings.batch_schedule_delay_ms,
            # the SDK refuses a batch larger than its queue
            max_export_batch_size=min(
                settings.batch_max_export_size, settings.batch_max_queue_size
            ),
        )

    if settings.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            batched(OTLPSpanExporter(endpoint=settings.otlp_endpoint, insecure=True))
        )
    elif settings.exporter == "console":
        provider.add_span_processor(batched(ConsoleSpanExporter()))
    if settings.zipkin_endpoint:
        provider.add_span_processor(batched(_zipkin_exporter(settings.zipkin_endpoint)))
    trace.set_tracer_provider(provider)
    return provider


class _QuietExporter(SpanExporter):
    """Drops a batch its exporter cannot send, with one log line per outage instead of the
    processor's traceback per batch; batches flow again once the receiver is up."""

    def __init__(self, inner: SpanExporter, errors: tuple[type[Exception], ...], name: str) -> None:
        self._inner = inner
        self._errors = errors
        self._name = name
        self._reachable = True

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._inner.export(spans)
        except self._errors as exc:
            if self._reachable:
                log.info("%s unreachable, dropping spans until it is up: %s", self._name, exc)
            self._reachable = False
            return SpanExportResult.FAILURE
        self._reachable = True
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


def _zipkin_exporter(endpoint: str) -> SpanExporter:
    """A second copy of each span, for the local trace UI (Zipkin)."""
    import requests
    from opentelemetry.exporter.zipkin.json import ZipkinExporter

    return _QuietExporter(
        ZipkinExporter(endpoint=endpoint, timeout=5),
        (requests.RequestException,),
        f"zipkin at {endpoint}",
    )


def grpc_client_interceptors() -> list[Any]:
    """Interceptors that put each outgoing gRPC call on the current trace."""
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors())  # type: ignore[no-untyped-call]


def grpc_server_interceptors() -> list[Any]:
    """Interceptors that continue the caller's trace in each incoming gRPC call."""
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor()]  # type: ignore[no-untyped-call]
