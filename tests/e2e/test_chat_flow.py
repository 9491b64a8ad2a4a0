"""A chat through the real gateway, Kafka, orchestrator, worker, memory, FerretDB, Redis."""

import asyncio
import json
import re
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pymongo import AsyncMongoClient

from switchboard.v1.chat_pb2 import ROLE_ASSISTANT, ROLE_USER, ChatEvent, ChatOptions, ChatRequest
from switchboard.v1.chat_pb2_grpc import ChatServiceStub
from switchboard.v1.events_pb2 import DeadLetter, TurnRequest
from switchboard.v1.memory_pb2 import GetContextRequest
from switchboard.v1.memory_pb2_grpc import MemoryServiceStub

from .conftest import HEALTH_PORTS, KAFKA, MEMORY_PORT, Platform

pytestmark = pytest.mark.e2e
STORE_WAIT_S = 20.0


@pytest.fixture
async def chat(platform: Platform) -> AsyncIterator[ChatServiceStub]:
    async with grpc.aio.insecure_channel(platform.gateway_target) as channel:
        yield ChatServiceStub(channel)


def auth(platform: Platform) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {platform.api_key}")]


async def collect(
    stub: ChatServiceStub, request: ChatRequest, platform: Platform
) -> list[ChatEvent]:
    return [e async for e in stub.Chat(request, metadata=auth(platform), timeout=60)]


def journal(platform: Platform) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{platform.simulator_url}/_journal", timeout=5) as response:
        requests: list[dict[str, Any]] = json.load(response)["requests"]
        return requests


def text_of(events: list[ChatEvent]) -> str:
    return "".join(e.delta.text for e in events if e.WhichOneof("event") == "delta")


async def stored_messages(
    mongo: AsyncMongoClient[dict[str, object]], platform: Platform, conversation_id: str, count: int
) -> list[dict[str, object]]:
    """Wait (bounded) until the conversation holds `count` messages."""
    messages = mongo[platform.database]["messages"]
    deadline = time.monotonic() + STORE_WAIT_S
    while True:
        docs = (
            await messages.find({"conversation_id": conversation_id}).sort("created_at").to_list()
        )
        if len(docs) >= count or time.monotonic() > deadline:
            return docs
        await asyncio.sleep(0.1)


async def test_chat_streams_reply_and_stores_turn(
    chat: ChatServiceStub, platform: Platform, mongo: AsyncMongoClient[dict[str, object]]
) -> None:
    request_id = f"e2e-{uuid.uuid4()}"
    events = await collect(
        chat,
        ChatRequest(message="Where is my order 12345?", user_id="alice", request_id=request_id),
        platform,
    )
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "started" and kinds[-1] == "done", kinds
    assert "delta" in kinds
    assert all(e.request_id == request_id for e in events)
    sequences = [e.sequence for e in events]
    assert sequences == sorted(set(sequences)), "events are ordered and unique"
    conversation_id = events[0].started.conversation_id
    done = events[-1].done
    assert (done.tier, done.model, done.finish_reason) == ("cheap", "gpt-4o-mini", "stop")
    assert done.usage.input_tokens > 0 and done.usage.output_tokens > 0
    assert done.cost_usd > 0
    reply = text_of(events)
    assert reply.strip()

    # The provider received the user's message through the official OpenAI SDK (the first
    # request of the turn: the simulator then calls order_status, and the second request ends
    # with the tool's result).
    asked = {"role": "user", "content": "Where is my order 12345?"}
    sent = [r for r in journal(platform) if r["api"] == "openai" and asked in r["body"]["messages"]]
    assert sent[0]["body"]["messages"][-1] == asked
    assert sent[0]["body"]["model"] == "gpt-4o-mini"

    docs = await stored_messages(mongo, platform, conversation_id, 2)
    assert [(d["role"], d["text"]) for d in docs] == [
        (ROLE_USER, "Where is my order 12345?"),
        (ROLE_ASSISTANT, reply),
    ]
    assert {d["tenant_id"] for d in docs} == {"demo"}
    assert {d["request_id"] for d in docs} == {request_id}
    # Memory writes the conversation document right after the messages: wait for it (bounded).
    conversations = mongo[platform.database]["conversations"]
    deadline = time.monotonic() + STORE_WAIT_S
    conversation = await conversations.find_one({"conversation_id": conversation_id})
    while conversation is None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        conversation = await conversations.find_one({"conversation_id": conversation_id})
    assert conversation is not None and conversation["user_id"] == "alice"


async def test_second_turn_sends_history_and_frontier_uses_anthropic(
    chat: ChatServiceStub, platform: Platform, mongo: AsyncMongoClient[dict[str, object]]
) -> None:
    first = await collect(chat, ChatRequest(message="My name is Dana.", user_id="dana"), platform)
    conversation_id = first[0].started.conversation_id
    assert len(await stored_messages(mongo, platform, conversation_id, 2)) == 2

    second = await collect(
        chat,
        ChatRequest(
            conversation_id=conversation_id,
            message="What did I just tell you?",
            user_id="dana",
            options=ChatOptions(tier="frontier"),
        ),
        platform,
    )
    assert second[0].started.conversation_id == conversation_id
    done = second[-1].done
    assert (done.tier, done.model) == ("frontier", "claude-sonnet-4-6")
    sent = [r for r in journal(platform) if r["api"] == "anthropic"][-1]
    contents = [m["content"] for m in sent["body"]["messages"]]
    assert contents == ["My name is Dana.", text_of(first), "What did I just tell you?"]
    assert "customer-support assistant" in sent["body"]["system"]
    assert len(await stored_messages(mongo, platform, conversation_id, 4)) == 4


async def _end_offsets(topic: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            await consumer.topics()
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()
            ]
        offsets: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        return offsets
    finally:
        await consumer.stop()


@pytest.mark.parametrize(
    ("request_", "metadata", "code", "names"),
    [
        (ChatRequest(message="hi"), [], grpc.StatusCode.UNAUTHENTICATED, "API key"),
        (
            ChatRequest(message="hi"),
            [("authorization", "Bearer wrong")],
            grpc.StatusCode.UNAUTHENTICATED,
            "API key",
        ),
        (ChatRequest(message="   "), None, grpc.StatusCode.INVALID_ARGUMENT, "message"),
        (ChatRequest(message="x" * 8001), None, grpc.StatusCode.INVALID_ARGUMENT, "message"),
        (
            ChatRequest(message="hi", options=ChatOptions(tier="gold")),
            None,
            grpc.StatusCode.INVALID_ARGUMENT,
            "options.tier",
        ),
        (
            ChatRequest(message="hi", request_id="bad id!"),
            None,
            grpc.StatusCode.INVALID_ARGUMENT,
            "request_id",
        ),
    ],
)
async def test_bad_requests_get_a_clear_status_and_never_reach_kafka(
    chat: ChatServiceStub,
    platform: Platform,
    request_: ChatRequest,
    metadata: list[tuple[str, str]] | None,
    code: grpc.StatusCode,
    names: str,
) -> None:
    before = await _end_offsets(platform.topic("chat.requests"))
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await collect_with(chat, request_, auth(platform) if metadata is None else metadata)
    assert failure.value.code() == code
    assert names in (failure.value.details() or "")
    assert await _end_offsets(platform.topic("chat.requests")) == before


async def collect_with(
    stub: ChatServiceStub, request: ChatRequest, metadata: list[tuple[str, str]]
) -> list[ChatEvent]:
    return [e async for e in stub.Chat(request, metadata=metadata, timeout=30)]


async def test_trace_context_and_envelope_travel_in_kafka_headers(
    chat: ChatServiceStub, platform: Platform
) -> None:
    request_id = f"e2e-trace-{uuid.uuid4()}"
    await collect(chat, ChatRequest(message="trace me", request_id=request_id), platform)
    consumer = AIOKafkaConsumer(
        platform.topic("chat.requests"),
        bootstrap_servers=KAFKA,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        found = None
        deadline = time.monotonic() + 15
        while found is None and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for record in (r for records in batch.values() for r in records):
                if TurnRequest.FromString(record.value).request_id == request_id:
                    found = record
    finally:
        await consumer.stop()
    assert found is not None
    headers = {k: v.decode() for k, v in found.headers}
    assert headers["sb-type"] == "switchboard.v1.TurnRequest"
    assert headers["sb-schema-version"] == "1"
    version, trace_id, _span_id, _flags = headers["traceparent"].split("-")
    assert version == "00" and len(trace_id) == 32 and int(trace_id, 16) != 0


async def test_poison_message_goes_to_dead_letter_and_consumer_carries_on(
    chat: ChatServiceStub, platform: Platform
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA)
    await producer.start()
    try:
        await producer.send_and_wait(
            platform.topic("chat.requests"),
            b"\xff not protobuf",
            key=b"poison",
            headers=[("sb-type", b"switchboard.v1.TurnRequest"), ("sb-schema-version", b"1")],
        )
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        platform.topic("chat.requests.dlq"),
        bootstrap_servers=KAFKA,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    letter = None
    try:
        deadline = time.monotonic() + 20
        while letter is None and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for record in (r for records in batch.values() for r in records):
                candidate = DeadLetter.FromString(record.value)
                if candidate.value == b"\xff not protobuf":
                    letter = candidate
    finally:
        await consumer.stop()
    assert letter is not None, "the poison record reached the dead-letter topic"
    assert letter.source_topic == platform.topic("chat.requests")
    assert "cannot parse" in letter.error
    # The orchestrator carried on.
    events = await collect(chat, ChatRequest(message="still there?"), platform)
    assert events[-1].WhichOneof("event") == "done"


async def test_back_to_back_turns_on_one_conversation_all_complete(
    chat: ChatServiceStub, platform: Platform
) -> None:
    """The next message may follow `done` at once: the conversation is free by then."""
    first = await collect(chat, ChatRequest(message="one"), platform)
    conversation_id = first[0].started.conversation_id
    for message in ("two", "three", "four"):
        events = await collect(
            chat, ChatRequest(conversation_id=conversation_id, message=message), platform
        )
        assert events[-1].WhichOneof("event") == "done", message


async def test_a_follow_up_runs_on_the_context_memory_would_give_without_reading_it(
    chat: ChatServiceStub, platform: Platform, mongo: AsyncMongoClient[dict[str, object]]
) -> None:
    """Decision 0084: the orchestrator extends the context of the turn it ran by that turn,
    and the next turn's prompt is what memory answers once the turn is stored."""
    url = f"http://127.0.0.1:{HEALTH_PORTS['orchestrator']}/metrics"

    def reused() -> float:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        match = re.search(
            r'^switchboard_orchestrator_contexts_total\{source="extended"\} ([0-9.e+-]+)$',
            text,
            re.MULTILINE,
        )
        return float(match.group(1)) if match else 0.0

    async def say(message: str, conversation_id: str = "") -> list[ChatEvent]:
        request = ChatRequest(conversation_id=conversation_id, message=message, user_id="u1")
        return await collect(chat, request, platform)

    before = reused()
    first = await say("Hi there, my name is Dana Reyes.")
    conversation_id = first[0].started.conversation_id
    await say("Nice to meet you too.", conversation_id)
    # What memory answers for the next turn, once both turns are stored.
    assert len(await stored_messages(mongo, platform, conversation_id, 4)) == 4
    async with grpc.aio.insecure_channel(f"127.0.0.1:{MEMORY_PORT}") as channel:
        stored = await MemoryServiceStub(channel).GetContext(
            GetContextRequest(tenant_id="demo", conversation_id=conversation_id, max_tokens=4_000),
            timeout=10,
        )
    assert stored.complete and len(stored.messages) == 4
    assert [(f.kind, f.value) for f in stored.facts] == [("customer_name", "Dana Reyes")]

    third = "Thanks, that is all for today."
    await say(third, conversation_id)
    assert reused() >= before + 2  # the second and the third turn
    # The third turn's prompt (either provider's shape): history, then the message.
    bodies = [r["body"] for r in journal(platform) if r["api"] in ("openai", "anthropic")]
    body = next(b for b in reversed(bodies) if b.get("messages", [{}])[-1].get("content") == third)
    history = [m["content"] for m in body["messages"] if m["role"] in ("user", "assistant")]
    assert history[:-1] == [m.text for m in stored.messages]
    system = " ".join(
        [str(body.get("system", ""))]
        + [m["content"] for m in body["messages"] if m["role"] == "system"]
    )
    assert "customer name: Dana Reyes" in system
