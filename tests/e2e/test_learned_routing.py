"""The learned router through the public API: it decides, explains, and is measured."""

import re
import urllib.request
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient

from switchboard.v1.chat_pb2 import ROLE_ASSISTANT, ChatRequest
from switchboard.v1.chat_pb2_grpc import ChatServiceStub

from .conftest import HEALTH_PORTS, Platform
from .test_chat_flow import chat, collect, stored_messages

pytestmark = pytest.mark.e2e
__all__ = ["chat"]  # the fixture, re-used


def orchestrator_metrics() -> str:
    url = f"http://127.0.0.1:{HEALTH_PORTS['orchestrator']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text: str = response.read().decode()
        return text


def sample(metrics: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", metrics, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_a_short_complex_message_goes_to_frontier_with_a_learned_reason(
    chat: ChatServiceStub, platform: Platform, mongo: AsyncMongoClient[dict[str, object]]
) -> None:
    # No rule fires on this message (the rules score it 0 and would route it cheap).
    message = "My claim was turned down because of a pre-existing condition."
    before = sample(
        orchestrator_metrics(), 'switchboard_routing_seconds_count{classifier="learned"}'
    )
    events = await collect(chat, ChatRequest(message=message), platform)
    done = events[-1].done
    assert done.tier == "frontier"
    conversation_id = events[0].started.conversation_id
    docs = await stored_messages(mongo, platform, conversation_id, 2)
    (assistant,) = [d for d in docs if d["role"] == ROLE_ASSISTANT]
    reason = str(assistant["routing_reason"])
    assert reason.startswith("learned p(complex)") and "nearest labelled:" in reason, reason

    simple = await collect(chat, ChatRequest(message="What are your opening hours?"), platform)
    assert simple[-1].done.tier == "cheap"

    metrics = orchestrator_metrics()
    assert sample(metrics, "switchboard_router_model_loaded") == 1.0
    after = sample(metrics, 'switchboard_routing_seconds_count{classifier="learned"}')
    assert after >= before + 2


def routing_buckets(metrics: str) -> list[tuple[float, float]]:
    """(upper bound in seconds, cumulative count) of the learned router's timing histogram."""
    pattern = re.compile(
        r'^switchboard_routing_seconds_bucket\{classifier="learned",le="([^"]+)"\} ([0-9.e+-]+)$',
        re.MULTILINE,
    )
    return [(float(le), float(count)) for le, count in pattern.findall(metrics)]


def quantile_bound(buckets: list[tuple[float, float]], q: float) -> float:
    """The upper bound of the bucket holding the q-quantile."""
    total = buckets[-1][1]
    return next(le for le, count in buckets if count >= q * total)


async def test_routing_time_through_the_api_is_recorded(
    chat: ChatServiceStub, platform: Platform
) -> None:
    """Held-out messages through the gateway; prints the routing time the orchestrator
    measured (bucket bounds of switchboard_routing_seconds; a measurement, not asserted)."""
    from switchboard.orchestrator.router_training import load_examples

    holdout = load_examples(Path(__file__).parents[1] / "data" / "router_holdout.jsonl")
    first = routing_buckets(orchestrator_metrics())
    for example in holdout[:60]:
        events = await collect(chat, ChatRequest(message=example.text), platform)
        assert events[-1].WhichOneof("event") in ("done", "error")
    last = routing_buckets(orchestrator_metrics())
    start = dict(first)
    delta = [(le, count - start.get(le, 0.0)) for le, count in last]
    assert delta[-1][1] >= 60
    print(
        f"\nrouting time of {delta[-1][1]:.0f} turns through the API: "
        f"p50 ≤ {quantile_bound(delta, 0.5) * 1000:g} ms, "
        f"p99 ≤ {quantile_bound(delta, 0.99) * 1000:g} ms"
    )
