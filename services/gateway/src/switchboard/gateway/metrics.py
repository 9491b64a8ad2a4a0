"""Prometheus metrics of the gateway, all in one place."""

import time

from prometheus_client import Counter, Gauge, Histogram

CHATS = Counter("switchboard_gateway_chats", "Chat calls by outcome", ["outcome"])
TIME_TO_FIRST_TOKEN = Histogram(
    "switchboard_gateway_time_to_first_token_seconds",
    "From a turn's acceptance to its first text relayed to the client",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
OUTPUT_TOKENS = Counter(
    "switchboard_gateway_output_tokens", "Generated tokens relayed to clients (rate = tokens/s)"
)
STREAM_TOKENS_PER_SECOND = Histogram(
    "switchboard_gateway_stream_tokens_per_second",
    "Per reply: output tokens over the time from its first text to done",
    buckets=(5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
)
OPEN_STREAMS = Gauge("switchboard_gateway_open_streams", "Client reply streams open")
REPLIES = Counter("switchboard_gateway_reply_events", "Reply events by delivery", ["delivery"])
RECORDING = Counter(
    "switchboard_gateway_recorded_events", "Reply events recorded for idempotency", ["outcome"]
)
SWEPT = Counter("switchboard_gateway_reply_topics_deleted", "Abandoned reply topics deleted")


def record_tokens(output_tokens: int, first_text_at: float | None) -> None:
    """Account the tokens of a finished reply."""
    OUTPUT_TOKENS.inc(output_tokens)
    if first_text_at is not None and output_tokens:
        elapsed = time.monotonic() - first_text_at
        if elapsed > 0:
            STREAM_TOKENS_PER_SECOND.observe(output_tokens / elapsed)
