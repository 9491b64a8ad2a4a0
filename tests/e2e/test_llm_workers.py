"""LLM workers through the whole platform: provider faults driven by the simulator's controls
(through the public API's `options.metadata`) and cancellation. A worker killed mid-stream is
one of the fault tests (test_faults.py)."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from google.protobuf.message import DecodeError
from pymongo import AsyncMongoClient

from switchboard.v1.chat_pb2 import ROLE_ASSISTANT, ROLE_USER, ChatEvent, ChatOptions, ChatRequest
from switchboard.v1.chat_pb2_grpc import ChatServiceStub
from switchboard.v1.events_pb2 import DeadLetter, LlmResult, LlmTask

from .conftest import KAFKA, Platform
from .faults_support import calls_for, final_text, kinds

pytestmark = pytest.mark.e2e
WAIT_S = 30.0


@pytest.fixture
async def chat(platform: Platform) -> AsyncIterator[ChatServiceStub]:
    async with grpc.aio.insecure_channel(platform.gateway_target) as channel:
        yield ChatServiceStub(channel)


def auth(platform: Platform) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {platform.api_key}")]


def request(message: str, *, tier: str = "cheap", **controls: str) -> ChatRequest:
    return ChatRequest(
        message=message,
        user_id="worker-tests",
        request_id=f"e2e-worker-{uuid.uuid4()}",
        options=ChatOptions(tier=tier, metadata={f"sim.{k}": v for k, v in controls.items()}),
    )


async def collect(
    stub: ChatServiceStub,
    chat_request: ChatRequest,
    platform: Platform,
    into: list[ChatEvent] | None = None,
) -> list[ChatEvent]:
    events = into if into is not None else []
    async for event in stub.Chat(chat_request, metadata=auth(platform), timeout=90):
        events.append(event)
    return events


async def stored(
    mongo: AsyncMongoClient[dict[str, object]], platform: Platform, query: dict[str, object], n: int
) -> list[dict[str, object]]:
    """The stored messages matching `query`, once there are `n` (bounded wait)."""
    messages = mongo[platform.database]["messages"]
    deadline = time.monotonic() + WAIT_S
    while True:
        docs = await messages.find(query).sort("created_at").to_list()
        if len(docs) >= n or time.monotonic() > deadline:
            return docs
        await asyncio.sleep(0.1)


def assert_well_formed(events: list[ChatEvent]) -> None:
    names = kinds(events)
    assert names[0] == "started" and names[-1] == "done", names
    sequences = [e.sequence for e in events[1:]]
    assert sequences == sorted(set(sequences)), "strictly increasing sequences"


async def test_a_stream_broken_midway_restarts_after_a_reset_and_the_final_text_is_stored(
    chat: ChatServiceStub, platform: Platform, mongo: AsyncMongoClient[dict[str, object]]
) -> None:
    # Broken well into the reply: the output guardrail may hold back a few characters (the
    # reply echoes "4411", a possible card prefix), and the client must have seen some text.
    turn = request(
        "My parcel 4411 never came", fault="disconnect", fault_attempts="1", fault_after="20"
    )
    events = await collect(chat, turn, platform)
    assert_well_formed(events)
    names = kinds(events)
    assert names.count("reset") == 1
    before = "".join(e.delta.text for e in events[: names.index("reset")] if e.delta.text)
    text = final_text(events)
    assert before and text.startswith(before), "the restart replays the same reply"
    assert [c["outcome"] for c in calls_for(platform.simulator_url, turn.request_id)] == [
        "fault_disconnect",
        "completed",
    ]
    docs = await stored(mongo, platform, {"request_id": turn.request_id}, 2)
    assert [(d["role"], d["text"]) for d in docs] == [
        (ROLE_USER, turn.message),
        (ROLE_ASSISTANT, text),
    ]


async def test_server_errors_are_retried_then_the_next_model_of_the_tier_answers(
    chat: ChatServiceStub, platform: Platform
) -> None:
    # The worker tries each model three times (two retries): all of the first model's tries fail.
    turn = request("Cancel my subscription", tier="frontier", fault="500", fault_attempts="3")
    events = await collect(chat, turn, platform)
    assert_well_formed(events)
    done = events[-1].done
    assert (done.tier, done.model) == ("frontier", "gpt-4o")
    assert "reset" not in kinds(events), "nothing was streamed before the failures"
    calls = calls_for(platform.simulator_url, turn.request_id)
    assert [(c["api"], c["outcome"]) for c in calls] == [
        ("anthropic", "error 500"),
        ("anthropic", "error 500"),
        ("anthropic", "error 500"),
        ("openai", "completed"),
    ]


async def test_rate_limits_are_retried_after_the_time_asked(
    chat: ChatServiceStub, platform: Platform
) -> None:
    turn = request("Hello there", fault="429", fault_attempts="1", retry_after_ms="300")
    events = await collect(chat, turn, platform)
    assert_well_formed(events)
    first, second = calls_for(platform.simulator_url, turn.request_id)
    assert (first["outcome"], second["outcome"]) == ("error 429", "completed")
    assert second["time"] - first["time"] >= 0.3


async def test_a_task_that_fails_for_good_ends_in_an_error_and_stores_nothing(
    chat: ChatServiceStub, platform: Platform, mongo: AsyncMongoClient[dict[str, object]]
) -> None:
    failing = request("This will not work", fault="500")
    events = await collect(chat, failing, platform)
    assert kinds(events)[0] == "started" and kinds(events)[-1] == "error"
    error = events[-1].error
    assert error.code == "UNAVAILABLE" and "500" in error.message
    conversation_id = events[0].started.conversation_id
    # A later turn of the same conversation is stored; the failed one never is.
    later = request("Try again")
    later.conversation_id = conversation_id
    assert kinds(await collect(chat, later, platform))[-1] == "done"
    docs = await stored(mongo, platform, {"conversation_id": conversation_id}, 2)
    assert {d["request_id"] for d in docs} == {later.request_id}


async def test_cancelling_the_call_stops_the_provider_stream(
    chat: ChatServiceStub, platform: Platform
) -> None:
    turn = request("Tell me everything", delay_ms="50", tokens="400")  # 20 s if not stopped
    call = chat.Chat(turn, metadata=auth(platform), timeout=60)
    async for event in call:
        if event.WhichOneof("event") == "delta":
            break
    call.cancel()
    cancelled_at = time.time()
    deadline = time.monotonic() + 10
    entries: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        entries = calls_for(platform.simulator_url, turn.request_id)
        if entries and "outcome" in entries[-1]:
            break
        await asyncio.sleep(0.05)
    [entry] = entries
    assert entry.get("outcome") == "client_disconnected", entry
    assert entry["tokens_sent"] < 400
    print(f"provider stream closed {1000 * (entry['ended'] - cancelled_at):.0f} ms after the call")


async def _records(topic: str, match: Any, wait_s: float = WAIT_S) -> list[Any]:
    """Records of `topic` (from the start) for which `match(record)` is true (bounded wait)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=KAFKA, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    found: list[Any] = []
    try:
        deadline = time.monotonic() + wait_s
        while not found and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            found.extend(r for records in batch.values() for r in records if match(r))
    finally:
        await consumer.stop()
    return found


async def test_an_undecodable_task_is_dead_lettered_and_the_worker_carries_on(
    chat: ChatServiceStub, platform: Platform
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA)
    await producer.start()
    poison = f"not a task {uuid.uuid4()}".encode()
    try:
        await producer.send_and_wait(
            platform.topic("llm.tasks.cheap"),
            poison,
            key=b"poison-task",
            headers=[("sb-type", b"switchboard.v1.LlmTask"), ("sb-schema-version", b"1")],
        )
    finally:
        await producer.stop()
    [record] = await _records(
        platform.topic("llm.tasks.cheap.dlq"),
        lambda r: DeadLetter.FromString(r.value).value == poison,
    )
    letter = DeadLetter.FromString(record.value)
    assert letter.source_topic == platform.topic("llm.tasks.cheap")
    assert letter.consumer_group == f"e2e-{platform.run_id}-llm-worker-cheap"
    assert "cannot parse" in letter.error
    events = await collect(chat, request("still working?"), platform)
    assert kinds(events)[-1] == "done"


def _request_id(record: Any, message_type: type[LlmTask] | type[LlmResult]) -> str:
    try:
        return message_type.FromString(record.value).request_id
    except DecodeError:  # the poison task of another test
        return ""


def _trace_id(record: Any) -> str:
    headers = {k: v.decode() for k, v in record.headers}
    return headers["traceparent"].split("-")[1]


async def test_the_task_trace_continues_into_replies_and_results(
    chat: ChatServiceStub, platform: Platform
) -> None:
    turn = request("trace this generation")
    await collect(chat, turn, platform)
    [task] = await _records(
        platform.topic("llm.tasks.cheap"),
        lambda r: _request_id(r, LlmTask) == turn.request_id,
    )
    [result] = await _records(
        platform.topic("llm.results"),
        lambda r: _request_id(r, LlmResult) == turn.request_id,
    )
    assert _trace_id(result) == _trace_id(task) != "0" * 32
