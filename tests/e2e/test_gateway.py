"""The gateway's contract through the real servers: statuses, tenants, limits, idempotency,
replicas, cancellation, deadlines, reflection and draining on shutdown."""

import asyncio
import contextlib
import json
import signal
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import grpc
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from switchboard.common.budget import BudgetLedger
from switchboard.common.tenants import RateLimits, TenantConfig, hash_api_key
from switchboard.v1.chat_pb2 import ChatEvent, ChatOptions, ChatRequest
from switchboard.v1.chat_pb2_grpc import ChatServiceStub
from switchboard.v1.events_pb2 import CancelGeneration, LlmResult, TurnRequest

from .conftest import KAFKA, REDIS, Platform, seed_tenants
from .gateway_lane import (
    Lane,
    free_port,
    start_lane,
    start_process,
    stop_processes,
    wait_ready,
)
from .markers import word_marker
from .test_chat_flow import _end_offsets, journal, stored_messages, text_of

pytestmark = pytest.mark.e2e
M = TypeVar("M", bound=Message)
WAIT_S = 20.0


def bearer(key: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")]


def kinds(events: list[ChatEvent]) -> list[str]:
    return [str(e.WhichOneof("event")) for e in events]


@pytest.fixture(scope="module")
def lane(platform: Platform) -> Iterator[Lane]:
    yield from start_lane(platform)


@pytest.fixture
async def channels() -> AsyncIterator[Callable[[str], ChatServiceStub]]:
    """Stubs by target, closed after the test."""
    opened: list[grpc.aio.Channel] = []

    def stub(target: str) -> ChatServiceStub:
        channel = grpc.aio.insecure_channel(target)
        opened.append(channel)
        return ChatServiceStub(channel)

    yield stub
    for channel in opened:
        await channel.close()


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS)
    yield client
    await client.aclose()


async def collect(
    stub: ChatServiceStub, request: ChatRequest, key: str, deadline_s: float = 60
) -> list[ChatEvent]:
    """Every event of one call, with a gRPC deadline of `deadline_s`."""
    return [e async for e in stub.Chat(request, metadata=bearer(key), timeout=deadline_s)]


async def find_records(
    topic: str, message_type: type[M], matches: Callable[[M], bool], timeout_s: float = WAIT_S
) -> list[M]:
    """Every record of `topic` matching, waiting (bounded) until at least one is there.

    Records that are not `message_type` are skipped (e.g. the poison record of another test).
    """
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=KAFKA, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    found: list[M] = []
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for record in (r for records in batch.values() for r in records):
                try:
                    candidate = message_type.FromString(record.value)
                except DecodeError:
                    continue
                if matches(candidate):
                    found.append(candidate)
            if found and not batch:
                break
    finally:
        await consumer.stop()
    return found


async def request_ids_on(topic: str) -> set[str]:
    """The request ids of every reply event on a reply topic so far."""
    records = await find_records(topic, ChatEvent, lambda _e: True, timeout_s=3)
    return {e.request_id for e in records}


async def read_until_delta(call: Any) -> list[ChatEvent]:
    """Events of a call up to and including its first delta: the generation is running."""
    events: list[ChatEvent] = []
    while not events or events[-1].WhichOneof("event") != "delta":
        event = await call.read()
        assert event is not grpc.aio.EOF, kinds(events)
        events.append(event)
    return events


async def read_rest(call: Any) -> list[ChatEvent]:
    events = []
    while (event := await call.read()) is not grpc.aio.EOF:
        events.append(event)
    return events


# ---- the main platform ----------------------------------------------------------------


async def test_a_tenant_cannot_read_another_tenants_conversation(
    chat_stub: ChatServiceStub, platform: Platform, mongo: AsyncMongoClient[dict[str, object]]
) -> None:
    secret = f"My locker code is {word_marker(6)}."
    first = await collect(chat_stub, ChatRequest(message=secret), platform.api_key)
    conversation_id = first[0].started.conversation_id
    assert len(await stored_messages(mongo, platform, conversation_id, 2)) == 2

    probe = f"What is my locker code? {uuid.uuid4()}"
    made_up = str(uuid.uuid4())
    before = await _end_offsets(platform.topic("chat.requests"))
    refusals = {}
    for target in (conversation_id, made_up):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await collect(
                chat_stub,
                ChatRequest(conversation_id=target, message=probe),
                platform.other_api_key,
            )
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND, failure.value.details()
        refusals[target] = (failure.value.details() or "").replace(target, "<id>")
    # The other tenant learns nothing: the same answer as for an id that never existed.
    assert refusals[conversation_id] == refusals[made_up]
    assert secret not in refusals[conversation_id]
    assert await _end_offsets(platform.topic("chat.requests")) == before, "nothing published"
    assert not any(probe in json.dumps(r["body"]) for r in journal(platform))
    docs = await stored_messages(mongo, platform, conversation_id, 2)
    assert {(d["tenant_id"], d["text"]) for d in docs} >= {("demo", secret)}
    assert all(d["tenant_id"] == "demo" for d in docs)


async def test_an_unknown_conversation_id_is_not_found_and_nothing_is_published(
    chat_stub: ChatServiceStub, platform: Platform
) -> None:
    made_up = f"e2e-made-up-{uuid.uuid4()}"
    before = await _end_offsets(platform.topic("chat.requests"))
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await collect(
            chat_stub, ChatRequest(conversation_id=made_up, message="hello"), platform.api_key
        )
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    assert f"conversation {made_up!r} not found" in (failure.value.details() or "")
    assert await _end_offsets(platform.topic("chat.requests")) == before


async def test_over_the_per_user_rate_limit_is_resource_exhausted_with_retry_delay(
    chat_stub: ChatServiceStub, platform: Platform
) -> None:
    tenant_id = f"e2e-limited-{platform.run_id}"
    key = f"e2e-limited-key-{platform.run_id}"
    await seed_tenants(
        platform.database,
        TenantConfig(
            tenant_id=tenant_id,
            api_key_sha256=[hash_api_key(key)],
            rate_limits=RateLimits(requests_per_minute=1_000, requests_per_minute_per_user=2),
        ),
    )
    for _ in range(2):
        events = await collect(chat_stub, ChatRequest(message="hi", user_id="u1"), key)
        assert events[-1].WhichOneof("event") == "done"
    before = await _end_offsets(platform.topic("chat.requests"))
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await collect(chat_stub, ChatRequest(message="hi", user_id="u1"), key)
    error = failure.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "user u1" in (error.details() or "") and "rate limit" in (error.details() or "")
    trailers = dict(error.trailing_metadata() or ())
    assert 0 < int(trailers["retry-after-ms"]) <= 30_000
    retry_info = error_details_pb2.RetryInfo()
    assert (
        status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
        .details[0]
        .Unpack(retry_info)
    )
    assert 0 < retry_info.retry_delay.ToMilliseconds() <= 30_000
    assert await _end_offsets(platform.topic("chat.requests")) == before
    # The limit is per user.
    events = await collect(chat_stub, ChatRequest(message="hi", user_id="u2"), key)
    assert events[-1].WhichOneof("event") == "done"


async def test_a_spent_daily_budget_is_resource_exhausted_until_midnight(
    chat_stub: ChatServiceStub, platform: Platform, redis: Redis
) -> None:
    tenant_id = f"e2e-broke-{platform.run_id}"
    key = f"e2e-broke-key-{platform.run_id}"
    await seed_tenants(
        platform.database,
        TenantConfig(tenant_id=tenant_id, api_key_sha256=[hash_api_key(key)], daily_budget_usd=1),
    )
    ledger = BudgetLedger(redis)
    await ledger.add(tenant_id, 1.5)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await collect(chat_stub, ChatRequest(message="hi"), key)
        assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "daily budget" in (failure.value.details() or "")
        retry_after_ms = int(dict(failure.value.trailing_metadata() or ())["retry-after-ms"])
        assert 0 < retry_after_ms <= 24 * 3600 * 1000
    finally:
        await ledger.add(tenant_id, -1.5)


async def test_a_retried_request_id_replays_the_reply_and_stores_one_turn(
    chat_stub: ChatServiceStub, platform: Platform, mongo: AsyncMongoClient[dict[str, object]]
) -> None:
    request = ChatRequest(message="Replay me", user_id="rita", request_id=f"e2e-{uuid.uuid4()}")
    first = await collect(chat_stub, request, platform.api_key)
    call = chat_stub.Chat(request, metadata=bearer(platform.api_key), timeout=30)
    replayed = [e async for e in call]
    assert ("sb-idempotency", "replayed") in tuple(await call.initial_metadata())
    assert replayed == first
    turns = await find_records(
        platform.topic("chat.requests"), TurnRequest, lambda t: t.request_id == request.request_id
    )
    assert len(turns) == 1, "one generation for one request id"
    docs = await stored_messages(mongo, platform, first[0].started.conversation_id, 2)
    assert [d["request_id"] for d in docs] == [request.request_id] * 2

    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await collect(
            chat_stub,
            ChatRequest(message="Something else", request_id=request.request_id),
            platform.api_key,
        )
    assert failure.value.code() == grpc.StatusCode.ALREADY_EXISTS
    # Request ids are scoped by tenant (issue 14): another tenant's same id is its own
    # request, answered afresh, and learns nothing of the first.
    theirs = await collect(chat_stub, request, platform.other_api_key)
    assert theirs[-1].HasField("done") and theirs[0].started.conversation_id != (
        first[0].started.conversation_id
    )


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (ChatRequest(message="hi", options=ChatOptions(temperature=3)), "options.temperature"),
        (
            ChatRequest(message="hi", options=ChatOptions(max_output_tokens=10**6)),
            "options.max_output_tokens",
        ),
        (ChatRequest(message="hi", conversation_id="no spaces"), "conversation_id"),
        (ChatRequest(message="hi", user_id="u" * 300), "user_id"),
    ],
)
async def test_invalid_options_name_their_field(
    chat_stub: ChatServiceStub, platform: Platform, request_: ChatRequest, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await collect(chat_stub, request_, platform.api_key)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (failure.value.details() or "").startswith(field)


async def test_a_request_over_the_message_size_limit_is_refused(
    chat_stub: ChatServiceStub, platform: Platform
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await collect(chat_stub, ChatRequest(message="x" * 100_000), platform.api_key)
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_client_built_from_reflection_lists_the_service_and_chats(platform: Platform) -> None:
    with grpc.insecure_channel(platform.gateway_target) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="switchboard.v1.ChatService"), timeout=5
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING

        database = ProtoReflectionDescriptorDatabase(channel)
        assert "switchboard.v1.ChatService" in database.get_services()
        # No generated code from here on: everything comes from the server's descriptors.
        pool = descriptor_pool.DescriptorPool(database)
        service = pool.FindServiceByName("switchboard.v1.ChatService")
        assert {m.name for m in service.methods} >= {
            "Chat",
            "GetConversation",
            "ListConversations",
            "DeleteConversation",
            "SubmitFeedback",
        }
        method = service.methods_by_name["Chat"]
        request_class = message_factory.GetMessageClass(method.input_type)
        event_class = message_factory.GetMessageClass(method.output_type)
        chat = channel.unary_stream(
            "/switchboard.v1.ChatService/Chat",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=event_class.FromString,
        )
        events = list(
            chat(
                request_class(message="hello from reflection"),
                metadata=bearer(platform.api_key),
                timeout=30,
            )
        )
        assert events[0].WhichOneof("event") == "started"
        assert events[-1].WhichOneof("event") == "done"
        assert "".join(e.delta.text for e in events if e.WhichOneof("event") == "delta")


@pytest.fixture
async def chat_stub(platform: Platform) -> AsyncIterator[ChatServiceStub]:
    async with grpc.aio.insecure_channel(platform.gateway_target) as channel:
        yield ChatServiceStub(channel)


# ---- the slow lane: generations that last seconds, two replicas -------------------------


async def test_each_replica_receives_only_its_own_replies(
    lane: Lane, channels: Callable[[str], ChatServiceStub]
) -> None:
    key = lane.platform.api_key
    short = ChatOptions(max_output_tokens=5)
    rid_a, rid_b = f"e2e-a-{uuid.uuid4()}", f"e2e-b-{uuid.uuid4()}"
    events_a, events_b = await asyncio.gather(
        collect(
            channels(lane.target("a")),
            ChatRequest(message="a", request_id=rid_a, options=short),
            key,
        ),
        collect(
            channels(lane.target("b")),
            ChatRequest(message="b", request_id=rid_b, options=short),
            key,
        ),
    )
    assert events_a[-1].WhichOneof("event") == events_b[-1].WhichOneof("event") == "done"
    on_a, on_b = (
        await request_ids_on(lane.reply_topic("a")),
        await request_ids_on(lane.reply_topic("b")),
    )
    assert rid_a in on_a and rid_a not in on_b
    assert rid_b in on_b and rid_b not in on_a


async def test_a_retry_on_another_replica_attaches_then_replays(
    lane: Lane, channels: Callable[[str], ChatServiceStub]
) -> None:
    key = lane.platform.api_key
    request = ChatRequest(message="Tell me a long story", request_id=f"e2e-{uuid.uuid4()}")
    first = channels(lane.target("a")).Chat(request, metadata=bearer(key), timeout=60)
    head = await read_until_delta(first)
    # The generation runs for seconds more; the retry lands on the other replica.
    retry = channels(lane.target("b")).Chat(request, metadata=bearer(key), timeout=60)
    assert ("sb-idempotency", "attached") in tuple(await retry.initial_metadata())
    attached = await read_rest(retry)
    original = head + await read_rest(first)
    assert attached == original, "the attached retry sees the whole reply, from `started`"
    assert kinds(original)[-1] == "done" and len(text_of(original)) > 100

    call = channels(lane.target("a")).Chat(request, metadata=bearer(key), timeout=60)
    assert ("sb-idempotency", "replayed") in tuple(await call.initial_metadata())
    assert await read_rest(call) == original
    turns = await find_records(
        lane.topic("chat.requests"), TurnRequest, lambda t: t.request_id == request.request_id
    )
    assert len(turns) == 1


async def test_a_retry_after_a_dropped_connection_resumes_the_reply_within_the_grace(
    lane: Lane, channels: Callable[[str], ChatServiceStub]
) -> None:
    key = lane.platform.api_key
    request = ChatRequest(message="Tell me everything", request_id=f"e2e-{uuid.uuid4()}")
    first = channels(lane.target("b")).Chat(request, metadata=bearer(key), timeout=60)
    head = await read_until_delta(first)
    first.cancel()  # replica b waits DISCONNECT_GRACE_S before it cancels
    retry = channels(lane.target("a")).Chat(request, metadata=bearer(key), timeout=60)
    assert ("sb-idempotency", "attached") in tuple(await retry.initial_metadata())
    events = await read_rest(retry)
    assert events[: len(head)] == head
    assert kinds(events)[-1] == "done", "the generation outlived its caller for the retry"
    assert len(text_of(events)) > 100


async def test_a_second_message_while_the_conversation_generates_fails_precondition(
    lane: Lane, channels: Callable[[str], ChatServiceStub]
) -> None:
    key = lane.platform.api_key
    first = channels(lane.target("a")).Chat(ChatRequest(message="one"), metadata=bearer(key))
    started = await first.read()
    assert started.WhichOneof("event") == "started"
    # Replica b knows the new conversation at once (a marked it before publishing the turn).
    conversation_id = started.started.conversation_id
    before = await _end_offsets(lane.topic("chat.requests"))
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await collect(
            channels(lane.target("b")),
            ChatRequest(conversation_id=conversation_id, message="two"),
            key,
        )
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert conversation_id in (failure.value.details() or "")
    assert await _end_offsets(lane.topic("chat.requests")) == before
    first.cancel()


async def test_a_client_that_disconnects_cancels_its_generation(
    lane: Lane, channels: Callable[[str], ChatServiceStub]
) -> None:
    key = lane.platform.api_key
    request_id = f"e2e-cancel-{uuid.uuid4()}"
    call = channels(lane.target("a")).Chat(
        ChatRequest(message="a long answer please", request_id=request_id), metadata=bearer(key)
    )
    await read_until_delta(call)
    call.cancel()
    cancels = await find_records(
        lane.topic("chat.cancel"), CancelGeneration, lambda c: c.request_id == request_id
    )
    assert [c.request_id for c in cancels] == [request_id]
    # The worker stopped the provider stream and reported the cancelled generation.
    results = await find_records(
        lane.topic("llm.results"), LlmResult, lambda r: r.request_id == request_id
    )
    assert [r.error.code for r in results] == ["CANCELLED"]


async def test_a_passed_deadline_is_deadline_exceeded_and_cancels_the_generation(
    lane: Lane, channels: Callable[[str], ChatServiceStub]
) -> None:
    request_id = f"e2e-deadline-{uuid.uuid4()}"
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await collect(
            channels(lane.target("a")),
            ChatRequest(message="slow", request_id=request_id),
            lane.platform.api_key,
            deadline_s=1.0,
        )
    assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    cancels = await find_records(
        lane.topic("chat.cancel"), CancelGeneration, lambda c: c.request_id == request_id
    )
    assert len(cancels) == 1
    turns = await find_records(
        lane.topic("chat.requests"), TurnRequest, lambda t: t.request_id == request_id
    )
    assert turns[0].HasField("deadline")


async def test_an_unreachable_redis_is_unavailable_and_nothing_is_published(
    lane: Lane, channels: Callable[[str], ChatServiceStub]
) -> None:
    before = await _end_offsets(lane.topic("chat.requests"))
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await collect(
            channels(lane.target("broken")), ChatRequest(message="hi"), lane.platform.api_key
        )
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "Redis" in (failure.value.details() or "")
    assert await _end_offsets(lane.topic("chat.requests")) == before


async def test_the_reply_topic_of_a_dead_replica_is_deleted(lane: Lane) -> None:
    ghost = lane.topic(f"chat.replies.ghost-{uuid.uuid4().hex[:8]}")
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA, request_timeout_ms=10_000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(ghost, num_partitions=1, replication_factor=1)])
        deadline = time.monotonic() + WAIT_S
        while ghost in (topics := await admin.list_topics()):
            assert time.monotonic() < deadline, f"{ghost} was not swept"
            await asyncio.sleep(0.5)
        assert lane.reply_topic("a") in topics and lane.reply_topic("b") in topics
    finally:
        await admin.close()


async def test_shutdown_drains_open_streams_and_removes_the_replica(
    lane: Lane, channels: Callable[[str], ChatServiceStub], redis: Redis
) -> None:
    health_port, grpc_port = free_port(), free_port()
    name = "slow-gateway-drain"
    process = start_process(
        name, "switchboard.gateway", lane.gateway_env("drain", grpc_port, health_port)
    )
    try:
        wait_ready(name, health_port, process)
        target = f"127.0.0.1:{grpc_port}"
        call = channels(target).Chat(
            ChatRequest(message="finish this please"),
            metadata=bearer(lane.platform.api_key),
            timeout=60,
        )
        head = await read_until_delta(call)
        process.send_signal(signal.SIGTERM)
        # Readiness drops at once, so that load balancers stop sending new calls.
        deadline = time.monotonic() + 5
        while _ready(health_port):
            assert time.monotonic() < deadline, "still ready while draining"
            await asyncio.sleep(0.1)
        events = head + await read_rest(call)
        assert kinds(events)[-1] == "done", "the open stream finished during the drain"
        assert await asyncio.to_thread(process.wait, 15) == 0
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await collect(channels(target), ChatRequest(message="hi"), lane.platform.api_key, 5)
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        assert not await redis.exists(f"sb:gateway:alive:{lane.reply_topic('drain')}")
        admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA, request_timeout_ms=10_000)
        await admin.start()
        try:
            assert lane.reply_topic("drain") not in await admin.list_topics()
        finally:
            await admin.close()
    finally:
        stop_processes({name: process})


async def test_a_retry_after_its_replica_died_is_aborted_and_the_topic_swept(
    lane: Lane, channels: Callable[[str], ChatServiceStub], redis: Redis
) -> None:
    health_port, grpc_port = free_port(), free_port()
    name = "slow-gateway-doomed"
    process = start_process(
        name, "switchboard.gateway", lane.gateway_env("doomed", grpc_port, health_port)
    )
    try:
        wait_ready(name, health_port, process)
        # Short enough to end before the dead replica's topic is swept (heartbeat TTL + grace):
        # a worker publishing to a deleted topic stalls until Kafka's request timeout.
        request = ChatRequest(
            message="long story",
            request_id=f"e2e-doomed-{uuid.uuid4()}",
            options=ChatOptions(max_output_tokens=20),
        )
        key = lane.platform.api_key
        call = channels(f"127.0.0.1:{grpc_port}").Chat(request, metadata=bearer(key))
        await read_until_delta(call)
        process.kill()  # no drain, no cleanup: a crashed pod
        process.wait(timeout=10)
        heartbeat = f"sb:gateway:alive:{lane.reply_topic('doomed')}"
        deadline = time.monotonic() + WAIT_S
        while await redis.exists(heartbeat):
            assert time.monotonic() < deadline, "the heartbeat never expired"
            await asyncio.sleep(0.2)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await collect(channels(lane.target("a")), request, key)
        assert failure.value.code() == grpc.StatusCode.ABORTED
        assert "new request_id" in (failure.value.details() or "")
        admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA, request_timeout_ms=10_000)
        await admin.start()
        try:
            while lane.reply_topic("doomed") in await admin.list_topics():
                assert time.monotonic() < deadline, "the dead replica's topic was not swept"
                await asyncio.sleep(0.5)
        finally:
            await admin.close()
    finally:
        stop_processes({name: process})


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


async def test_shutdown_keeps_the_reply_topic_of_streams_it_cut_off(
    lane: Lane, channels: Callable[[str], ChatServiceStub]
) -> None:
    """Issue 14, finding 6: streams cut off at shutdown may still have generations
    publishing to the reply topic, so the topic is left to the sweeper (a leftover line
    deleted it unconditionally). The replica runs under a topic prefix of its own, where no
    orchestrator answers (its stream stays open) and no other replica sweeps."""
    prefix = f"e2e-cutoff-{uuid.uuid4().hex[:8]}."
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA, request_timeout_ms=10_000)
    await admin.start()
    health_port, grpc_port = free_port(), free_port()
    name = "slow-gateway-cutoff"
    env = {
        **lane.gateway_env("cutoff", grpc_port, health_port),
        "SWITCHBOARD_KAFKA_TOPIC_PREFIX": prefix,
        "SWITCHBOARD_GATEWAY_SHUTDOWN_GRACE_S": "0.2",
    }
    reply_topic = f"{prefix}chat.replies.{lane.instance_id('cutoff')}"
    process = None
    try:
        await admin.create_topics(
            [NewTopic(f"{prefix}{t}", 1, 1) for t in ("chat.requests", "chat.cancel")]
        )
        process = start_process(name, "switchboard.gateway", env)
        wait_ready(name, health_port, process)
        call = channels(f"127.0.0.1:{grpc_port}").Chat(
            ChatRequest(message="nobody answers this"),
            metadata=bearer(lane.platform.api_key),
            timeout=60,
        )
        assert (await call.read()).WhichOneof("event") == "started"
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 15) == 0
        assert reply_topic in await admin.list_topics(), "deleted under a cut-off stream"
    finally:
        if process is not None:
            stop_processes({name: process})
        with contextlib.suppress(Exception):
            await admin.delete_topics(
                [f"{prefix}{t}" for t in ("chat.requests", "chat.cancel")] + [reply_topic]
            )
        await admin.close()
