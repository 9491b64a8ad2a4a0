"""Logging and OpenTelemetry set-up, one call per process."""

import logging
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

from switchboard.common.settings import TelemetrySettings


def setup_telemetry(service_name: str, settings: TelemetrySettings) -> TracerProvider:
    """Configure logging and the global tracer provider for `service_name`."""
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # aiokafka logs every connection hiccup at ERROR; ours say what matters.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if settings.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint, insecure=True))
        )
    elif settings.exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def grpc_client_interceptors() -> list[Any]:
    """Interceptors that put each outgoing gRPC call on the current trace."""
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors())  # type: ignore[no-untyped-call]


def grpc_server_interceptors() -> list[Any]:
    """Interceptors that continue the caller's trace in each incoming gRPC call."""
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor()]  # type: ignore[no-untyped-call]
