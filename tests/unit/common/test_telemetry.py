from opentelemetry.sdk.trace import TracerProvider

from switchboard.common.settings import TelemetrySettings
from switchboard.common.telemetry import setup_telemetry


def _sampled(provider: TracerProvider) -> bool:
    with provider.get_tracer("test").start_as_current_span("turn") as span:
        return span.is_recording()


def test_a_ratio_of_zero_records_no_new_trace() -> None:
    provider = setup_telemetry("test", TelemetrySettings(exporter="none", sample_ratio=0.0))
    try:
        assert not _sampled(provider)
    finally:
        provider.shutdown()


def test_every_trace_is_recorded_by_default() -> None:
    provider = setup_telemetry("test", TelemetrySettings(exporter="none"))
    try:
        assert _sampled(provider)
    finally:
        provider.shutdown()
