"""One trace per turn in Jaeger, and the metrics every service exports."""

import asyncio
import json
import time
import urllib.parse
import urllib.request
import uuid
from typing import Any

import grpc

from switchboard.v1.chat_pb2 import ChatRequest
from switchboard.v1.chat_pb2_grpc import ChatServiceStub

from .conftest import HEALTH_PORTS, JAEGER_QUERY, Platform

WAIT_S = 30.0
GENAI_ATTRIBUTES = {
    "gen_ai.system",
    "gen_ai.request.model",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.response.finish_reasons",
}


async def chat(platform: Platform, request: ChatRequest) -> str:
    """Send `request`; its conversation id."""
    async with grpc.aio.insecure_channel(platform.gateway_target) as channel:
        stub = ChatServiceStub(channel)
        metadata = [("authorization", f"Bearer {platform.api_key}")]
        events = [e async for e in stub.Chat(request, metadata=metadata, timeout=60)]
    assert events[-1].WhichOneof("event") == "done"
    return events[0].started.conversation_id


def jaeger_traces(request_id: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode(
        {
            "service": "gateway",
            "tags": json.dumps({"switchboard.request_id": request_id}),
            "lookback": "1h",
            "limit": "5",
        }
    )
    with urllib.request.urlopen(f"{JAEGER_QUERY}/api/traces?{query}", timeout=5) as response:
        traces: list[dict[str, Any]] = json.load(response)["data"] or []
        return traces


def full_trace(trace_id: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{JAEGER_QUERY}/api/traces/{trace_id}", timeout=5) as response:
        trace: dict[str, Any] = json.load(response)["data"][0]
        return trace


def services_of(trace: dict[str, Any]) -> set[str]:
    names = {pid: p["serviceName"] for pid, p in trace["processes"].items()}
    return {names[span["processID"]] for span in trace["spans"]}


async def test_one_chat_is_one_trace_through_all_four_services_with_genai_attributes(
    platform: Platform,
) -> None:
    # The second turn of a conversation: the first reads no context (it has none).
    conversation_id = await chat(platform, ChatRequest(message="Hello"))
    request_id = f"e2e-trace-{uuid.uuid4()}"
    await chat(
        platform,
        ChatRequest(
            message="Where is my parcel?", request_id=request_id, conversation_id=conversation_id
        ),
    )
    deadline = time.monotonic() + WAIT_S
    trace: dict[str, Any] = {}
    wanted = {"gateway", "orchestrator", "memory", "llm-worker"}
    while time.monotonic() < deadline:
        found = await asyncio.to_thread(jaeger_traces, request_id)
        if found:
            trace = await asyncio.to_thread(full_trace, found[0]["traceID"])
            # Memory's write of the turn is the last hop to arrive.
            if wanted <= services_of(trace):
                break
        await asyncio.sleep(0.5)
    assert trace, f"no trace for {request_id} in Jaeger at {JAEGER_QUERY}"
    assert wanted <= services_of(trace), services_of(trace)
    assert len(jaeger_traces(request_id)) == 1, "one trace per turn"
    model_spans = [
        span for span in trace["spans"] if {tag["key"] for tag in span["tags"]} >= GENAI_ATTRIBUTES
    ]
    assert model_spans, "the provider call carries the GenAI semantic-convention attributes"
    tags = {tag["key"]: tag["value"] for tag in model_spans[0]["tags"]}
    assert tags["gen_ai.request.model"] == "gpt-4o-mini"
    assert int(tags["gen_ai.usage.output_tokens"]) > 0
    # The second turn's context is the first's, extended by the orchestrator (decision
    # 0084): no GetContext in its trace, and the turn's span says where the context came from
    # (memory is in the trace through its write of the turn).
    turns = [span for span in trace["spans"] if span["operationName"] == "orchestrator.turn"]
    assert len(turns) == 1
    source = {tag["key"]: tag["value"] for tag in turns[0]["tags"]}["switchboard.context.source"]
    operations = {span["operationName"] for span in trace["spans"]}
    assert source == "extended", (source, operations)
    assert not any("GetContext" in name for name in operations), operations


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
        return text


def samples(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name)]


async def test_every_service_exports_the_operational_metrics(platform: Platform) -> None:
    await chat(platform, ChatRequest(message="How do I reset my password?", user_id="m1"))
    expected = {
        "gateway": [
            "switchboard_gateway_time_to_first_token_seconds_count",
            "switchboard_gateway_output_tokens_total",
            "switchboard_gateway_stream_tokens_per_second_count",
            "switchboard_gateway_chats_total",
        ],
        "orchestrator": [
            'switchboard_cost_usd_total{tenant="demo"',
            "switchboard_turns_total",
            "switchboard_routing_decisions_total",
            "switchboard_kafka_consumer_lag{",
        ],
        "llm-worker": [
            "switchboard_worker_time_to_first_token_seconds_count",
            "switchboard_worker_generations_in_flight",
            "switchboard_worker_provider_calls_total",
            "switchboard_kafka_consumer_lag{",
        ],
        "memory": ["switchboard_memory_turns_total", "switchboard_kafka_consumer_lag{"],
    }
    deadline = time.monotonic() + WAIT_S
    missing: dict[str, list[str]] = {}
    while time.monotonic() < deadline:
        texts = {s: await asyncio.to_thread(scrape, HEALTH_PORTS[s]) for s in expected}
        missing = {
            service: [name for name in names if not samples(texts[service], name)]
            for service, names in expected.items()
        }
        missing = {k: v for k, v in missing.items() if v}
        if not missing:
            break
        await asyncio.sleep(0.5)
    assert not missing, missing
    cost = samples(texts["orchestrator"], 'switchboard_cost_usd_total{tenant="demo"')
    assert any(float(line.rsplit(" ", 1)[1]) > 0 for line in cost)
