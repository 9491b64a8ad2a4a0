"""Prometheus metrics of the LLM worker, all in one place."""

from prometheus_client import Counter, Gauge, Histogram

PROVIDER_CALLS = Counter(
    "switchboard_worker_provider_calls",
    "Provider calls by outcome (ok, or the failure kind)",
    ["provider", "model", "outcome"],
)
RESETS = Counter("switchboard_worker_resets", "Reset events sent to clients", ["reason"])
TIME_TO_FIRST_TOKEN = Histogram(
    "switchboard_worker_time_to_first_token_seconds",
    "From the provider call to its first text delta",
    ["provider", "model"],
)
IN_FLIGHT = Gauge("switchboard_worker_generations_in_flight", "Generations running", ["tier"])
