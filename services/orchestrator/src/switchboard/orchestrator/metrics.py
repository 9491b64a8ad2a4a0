"""Prometheus metrics of the orchestrator: outcomes, cost, routing, guardrails, cache."""

from prometheus_client import Counter, Gauge, Histogram

from switchboard.v1.events_pb2 import CompletedTurn, LlmResult

TURNS = Counter(
    "switchboard_turns",
    "Finished turns by tenant, tier and finish reason",
    ["tenant", "tier", "finish_reason"],
)
TURN_ERRORS = Counter("switchboard_turn_errors", "Turns that ended in an error", ["code"])
COST_USD = Counter("switchboard_cost_usd", "Model spend by tenant and tier", ["tenant", "tier"])
TOKENS = Counter(
    "switchboard_model_tokens",
    "Model tokens by tenant, tier and direction",
    ["tenant", "tier", "direction"],
)
ROUTES = Counter("switchboard_routing_decisions", "Routing decisions by tier", ["tier", "how"])
RETRIEVALS = Counter(
    "switchboard_orchestrator_retrievals", "Knowledge retrievals by outcome", ["outcome"]
)
GUARDRAIL_ACTIONS = Counter(
    "switchboard_guardrail_actions", "Guardrail actions by kind (redacted:email, ...)", ["action"]
)
CONTEXTS = Counter(
    "switchboard_orchestrator_contexts",
    "Turn contexts by source: read from memory, or the previous turn's extended here",
    ["source"],
)
CACHE = Counter("switchboard_response_cache", "Response cache look-ups", ["result"])
ROUTING_SECONDS = Histogram(
    "switchboard_routing_seconds",
    "Time to classify a message for routing (embedding included), by classifier",
    ["classifier"],
    # Fine around the 5 ms target (issue 20), so that a p99 read from the buckets is close.
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.0075, 0.01, 0.02, 0.05),
)
ROUTER_MODEL_LOADED = Gauge(
    "switchboard_router_model_loaded", "1 when the learned router is in use, 0 on the rules"
)
ROUTER_MODEL_FALLBACKS = Counter(
    "switchboard_router_model_fallbacks",
    "Times the learned router could not be loaded and the rules were used",
    ["why"],
)


def record_result(result: LlmResult) -> None:
    """Spend and tokens of one generation (every round of a turn counts)."""
    tier = result.tier or "none"
    COST_USD.labels(result.tenant_id, tier).inc(result.cost_usd)
    TOKENS.labels(result.tenant_id, tier, "input").inc(result.usage.input_tokens)
    TOKENS.labels(result.tenant_id, tier, "output").inc(result.usage.output_tokens)
    if result.HasField("error"):
        TURN_ERRORS.labels(result.error.code or "UNKNOWN").inc()


def record_completed(turn: CompletedTurn) -> None:
    """Outcome and guardrail actions of a finished turn."""
    TURNS.labels(turn.tenant_id, turn.tier or "none", turn.finish_reason or "unknown").inc()
    for flag in turn.guardrail_flags:
        GUARDRAIL_ACTIONS.labels(guardrail_action(flag)).inc()


def guardrail_action(flag: str) -> str:
    """The bounded label of a guardrail flag: "redacted:email" stays, scores and topic names
    ("injection-blocked:0.93", "topic-blocked:refunds") are dropped."""
    kind, _, _ = flag.partition(":")
    return flag if kind in ("redacted", "output-redacted") else kind
