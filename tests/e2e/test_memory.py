"""The memory service on the real Kafka and FerretDB: idempotency, isolation, budgets,
deletion, summaries, retention, export."""

import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from switchboard.common.tenants import TenantConfig, TenantStore
from switchboard.conversation.tokens import count_tokens
from switchboard.conversation.window import (
    FACT_OVERHEAD_TOKENS,
    PER_MESSAGE_OVERHEAD_TOKENS,
    fact_line,
)
from switchboard.memory.retention import RetentionSweeper
from switchboard.memory.store import ConversationStore
from switchboard.v1.chat_pb2 import ROLE_ASSISTANT, ROLE_USER
from switchboard.v1.events_pb2 import CompletedTurn, DeadLetter
from switchboard.v1.memory_pb2 import (
    GetContextRequest,
    MemoryDeleteConversationRequest,
    MemoryExportConversationRequest,
    MemoryGetConversationRequest,
    MemoryListConversationsRequest,
)
from switchboard.v1.memory_pb2_grpc import MemoryServiceStub

from .conftest import KAFKA, MEMORY_PORT, MONGO, Platform
from .memory_support import Mongo, eventually, log_lines, make_turns, publish_turns, stored

pytestmark = pytest.mark.e2e


@pytest.fixture
async def memory(platform: Platform) -> AsyncIterator[MemoryServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{MEMORY_PORT}") as channel:
        yield MemoryServiceStub(channel)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def pairs(n: int, words: int = 5) -> list[tuple[str, str]]:
    return [
        (" ".join([f"question{i}"] * words), " ".join([f"answer{i}"] * words)) for i in range(n)
    ]


async def test_a_redelivered_turn_is_stored_exactly_once(platform: Platform, mongo: Mongo) -> None:
    conversation = new_id("dup")
    first, second = make_turns("acme", conversation, pairs(2))
    # The same turn three times, as a producer retry or a replayed partition would send it.
    await publish_turns(platform.topic("chat.turns"), [first, first, second, first])
    docs = await stored(mongo, platform.database, "acme", conversation, 4)
    # The later turn on the same partition is stored, so every copy before it was handled.
    await eventually(
        lambda: mongo[platform.database]["conversations"].find_one(
            {"tenant_id": "acme", "conversation_id": conversation}
        ),
        lambda doc: doc is not None and doc.get("message_count") == 4,
    )
    keys = [(d["request_id"], d["role"]) for d in docs]
    assert len(keys) == len(set(keys)) == 4
    assert keys == [
        (first.request_id, ROLE_USER),
        (first.request_id, ROLE_ASSISTANT),
        (second.request_id, ROLE_USER),
        (second.request_id, ROLE_ASSISTANT),
    ]
    assert {d["tenant_id"] for d in docs} == {"acme"}


async def test_tenants_never_see_each_other(
    platform: Platform, mongo: Mongo, memory: MemoryServiceStub
) -> None:
    conversation = new_id("shared-id")  # the same id in two tenants
    acme = make_turns("acme", conversation, [("acme secret order 11111", "acme reply")])
    globex = make_turns("globex", conversation, [("globex question", "globex reply")])
    await publish_turns(platform.topic("chat.turns"), acme + globex)
    await stored(mongo, platform.database, "acme", conversation, 2)
    await stored(mongo, platform.database, "globex", conversation, 2)

    context = await memory.GetContext(
        GetContextRequest(tenant_id="globex", conversation_id=conversation)
    )
    assert [m.text for m in context.messages] == ["globex question", "globex reply"]
    assert list(context.facts) == []  # acme's order number stays with acme
    whole = await memory.GetConversation(
        MemoryGetConversationRequest(tenant_id="acme", conversation_id=conversation)
    )
    assert [m.text for m in whole.messages] == ["acme secret order 11111", "acme reply"]
    listing = await memory.ListConversations(
        MemoryListConversationsRequest(tenant_id="globex", page_size=100)
    )
    assert all(
        c.conversation_id != conversation or c.message_count == 2 for c in listing.conversations
    )

    # Deleting in one tenant leaves the other untouched; an unknown tenant finds nothing.
    await memory.DeleteConversation(
        MemoryDeleteConversationRequest(tenant_id="globex", conversation_id=conversation)
    )
    still = await memory.GetConversation(
        MemoryGetConversationRequest(tenant_id="acme", conversation_id=conversation)
    )
    assert len(still.messages) == 2
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await memory.GetConversation(
            MemoryGetConversationRequest(tenant_id="initech", conversation_id=conversation)
        )
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND


async def test_budget_arithmetic_is_token_exact(
    platform: Platform, mongo: Mongo, memory: MemoryServiceStub
) -> None:
    conversation = new_id("budget")
    texts = [
        ("Hello, my name is Dana Reyes and my order 55123 is late.", "Sorry to hear that."),
        ("It was supposed to arrive on Monday.", "Let me check the tracking for you."),
        ("Thanks, I need a refund if it is lost.", "Understood, I will look into a refund."),
    ]
    await publish_turns(platform.topic("chat.turns"), make_turns("acme", conversation, texts))
    await stored(mongo, platform.database, "acme", conversation, 6)
    model = "gpt-4o-mini"

    def cost(text: str) -> int:
        return count_tokens(text, model) + PER_MESSAGE_OVERHEAD_TOKENS

    full = await memory.GetContext(
        GetContextRequest(tenant_id="acme", conversation_id=conversation, model=model)
    )
    facts_cost = sum(count_tokens(fact_line(f), model) + FACT_OVERHEAD_TOKENS for f in full.facts)
    assert [(f.kind, f.value) for f in full.facts] == [
        ("customer_name", "Dana Reyes"),
        ("order_number", "55123"),
        ("goal", "a refund if it is lost"),
    ]
    flat = [text for pair in texts for text in pair]
    assert [m.text for m in full.messages] == flat
    assert full.token_count == facts_cost + sum(cost(t) for t in flat)
    assert not full.degraded

    # A budget of exactly the facts and the last two messages keeps exactly those.
    budget = facts_cost + cost(flat[-1]) + cost(flat[-2])
    for max_tokens, expected in ((budget, flat[-2:]), (budget - 1, flat[-1:])):
        context = await memory.GetContext(
            GetContextRequest(
                tenant_id="acme", conversation_id=conversation, model=model, max_tokens=max_tokens
            )
        )
        assert [m.text for m in context.messages] == expected
        assert context.token_count == facts_cost + sum(cost(t) for t in expected) <= max_tokens

    # Another family counts with its own tokenizer (cl100k for Claude).
    claude = await memory.GetContext(
        GetContextRequest(tenant_id="acme", conversation_id=conversation, model="claude-sonnet-4-5")
    )
    assert claude.token_count == sum(
        count_tokens(fact_line(f), "claude-sonnet-4-5") + FACT_OVERHEAD_TOKENS for f in claude.facts
    ) + sum(count_tokens(t, "claude-sonnet-4-5") + PER_MESSAGE_OVERHEAD_TOKENS for t in flat)


async def settled_summary(
    mongo: Mongo, database: str, memory: MemoryServiceStub, conversation: str
) -> tuple[list[dict[str, Any]], Any]:
    """The summary versions of an `acme` conversation and its context, once a summary is
    stored and in use (the conversation's state, its versions and GetContext agree)."""
    db = mongo[database]
    scope = {"tenant_id": "acme", "conversation_id": conversation}

    async def observe() -> tuple[dict[str, Any] | None, list[dict[str, Any]], Any]:
        # Summaries land while later turns arrive: read until the three views agree.
        state = await db["conversations"].find_one(scope)
        versions = await db["summaries"].find(scope).sort("version").to_list()
        context = await memory.GetContext(
            GetContextRequest(**scope, model="gpt-4o-mini", max_tokens=100_000)
        )
        return state, versions, context

    def settled(seen: tuple[dict[str, Any] | None, list[dict[str, Any]], Any]) -> bool:
        state, versions, context = seen
        return (
            state is not None
            and "summary" in state
            # A later version may be on its way (summary_pending): what is stored is in use.
            and bool(versions)
            and versions[-1]["version"] == state["summary"]["version"]
            and context.summary == versions[-1]["text"]
        )

    seen = await eventually(observe, settled, timeout_s=30)
    if not settled(seen):
        state, versions, context = seen
        pending = (state or {}).get("summary_pending", {})
        pytest.fail(
            "no settled summary: "
            f"state.summary={(state or {}).get('summary', {}).get('version')} "
            f"pending={pending} "
            f"versions={[(v['version'], v['task_id'], v['until_position']) for v in versions]} "
            f"context.summary={context.summary[:40]!r} degraded={context.degraded}\n"
            + log_lines(
                conversation,
                *(str(v["task_id"]) for v in versions),
                str(pending.get("task_id", "-")),
            )
        )
    _, versions, context = seen
    return versions, context


async def test_a_long_conversation_is_summarised_and_the_summary_replaces_its_history(
    platform: Platform, mongo: Mongo, memory: MemoryServiceStub
) -> None:
    """Default settings: summary past 1,500 unsummarised tokens, newest 6 messages kept."""
    conversation = new_id("summary")
    texts = pairs(12, words=60)  # about 120 tokens per message, 2,900 in all
    turns = make_turns("acme", conversation, texts)
    await publish_turns(platform.topic("chat.turns"), turns)
    docs = await stored(mongo, platform.database, "acme", conversation, 24)
    assert len(docs) == 24

    versions, context = await settled_summary(mongo, platform.database, memory, conversation)
    latest = versions[-1]
    assert latest["version"] >= 1 and latest["text"].strip()
    # Versioned with the last message it covers, and the count of what it covers.
    covered = [d for d in docs if d["position"] <= latest["until_position"]]
    assert covered and covered[-1]["request_id"] == latest["until_request_id"]
    assert latest["covered_messages"] == len(covered)
    assert len(covered) <= 24 - 6, "the newest messages stay verbatim"
    # The context is the summary plus everything after it, instead of the whole history.
    recent = [d["text"] for d in docs if d["position"] > latest["until_position"]]
    assert [m.text for m in context.messages] == recent
    full_history = sum(count_tokens(d["text"]) + PER_MESSAGE_OVERHEAD_TOKENS for d in docs)
    assert context.token_count < full_history


async def test_many_short_turns_are_summarised_before_they_outgrow_the_window(
    platform: Platform, mongo: Mongo, memory: MemoryServiceStub
) -> None:
    """Default settings: a summary past 30 unsummarised messages, however few their tokens,
    so that the unsummarised ones stay inside the conversation's 40-message window."""
    conversation = new_id("short")
    texts = pairs(18, words=2)  # 36 messages of a few tokens: far from the 1,500-token trigger
    turns = make_turns("acme", conversation, texts)
    await publish_turns(platform.topic("chat.turns"), turns)
    docs = await stored(mongo, platform.database, "acme", conversation, 36)
    assert sum(count_tokens(d["text"]) for d in docs) < 500

    versions, context = await settled_summary(mongo, platform.database, memory, conversation)
    latest = versions[-1]
    assert latest["text"].strip() and latest["covered_messages"] <= 36 - 6
    recent = [d["text"] for d in docs if d["position"] > latest["until_position"]]
    assert [m.text for m in context.messages] == recent
    assert len(recent) <= 40, "the unsummarised messages fit the window"


async def test_deletion_removes_messages_summary_and_facts_and_late_turns_stay_out(
    platform: Platform, mongo: Mongo, memory: MemoryServiceStub
) -> None:
    conversation = new_id("delete")
    texts = [("My order 77001 is broken, I want a replacement", "Sorry!"), *pairs(11, words=60)]
    turns = make_turns("acme", conversation, texts)
    await publish_turns(platform.topic("chat.turns"), turns)
    await stored(mongo, platform.database, "acme", conversation, 24)
    db = mongo[platform.database]
    scope = {"tenant_id": "acme", "conversation_id": conversation}
    await eventually(lambda: db["summaries"].count_documents(scope), lambda n: n > 0, timeout_s=30)
    assert await db["facts"].count_documents(scope) >= 2

    await memory.DeleteConversation(
        MemoryDeleteConversationRequest(tenant_id="acme", conversation_id=conversation)
    )
    for collection in ("conversations", "messages", "summaries", "facts"):
        assert await db[collection].count_documents(scope) == 0, collection
    for call, request in (
        (memory.GetConversation, MemoryGetConversationRequest(**scope)),
        (memory.DeleteConversation, MemoryDeleteConversationRequest(**scope)),
        (memory.ExportConversation, MemoryExportConversationRequest(**scope)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await call(request)  # type: ignore[operator]
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    context = await memory.GetContext(GetContextRequest(**scope))
    assert list(context.messages) == [] and context.summary == "" and list(context.facts) == []

    # A late redelivery of an old turn does not bring it back; a new turn starts afresh.
    fresh = make_turns(
        "acme",
        conversation,
        [("starting over", "hello again")],
        start=datetime.now(UTC) + timedelta(seconds=1),
    )
    await publish_turns(platform.topic("chat.turns"), [turns[0], *fresh])
    docs = await stored(mongo, platform.database, "acme", conversation, 2)
    await eventually(lambda: db["messages"].count_documents(scope), lambda n: n >= 2)
    docs = await db["messages"].find(scope).sort("position").to_list()
    assert [d["text"] for d in docs] == ["starting over", "hello again"]


async def test_export_is_json_with_messages_summaries_and_facts(
    platform: Platform, mongo: Mongo, memory: MemoryServiceStub
) -> None:
    conversation = new_id("export")
    turns = make_turns("acme", conversation, [("Call me Ada, ticket T-9", "Hello Ada")])
    await publish_turns(platform.topic("chat.turns"), turns)
    await stored(mongo, platform.database, "acme", conversation, 2)
    exported = await memory.ExportConversation(
        MemoryExportConversationRequest(tenant_id="acme", conversation_id=conversation)
    )
    document = json.loads(exported.json)
    assert document["conversation_id"] == conversation and document["tenant_id"] == "acme"
    assert [(m["role"], m["text"]) for m in document["messages"]] == [
        ("user", "Call me Ada, ticket T-9"),
        ("assistant", "Hello Ada"),
    ]
    assert document["messages"][1]["model"] == "gpt-4o-mini"
    assert {(f["kind"], f["value"]) for f in document["facts"]} == {
        ("customer_name", "Ada"),
        ("ticket_number", "T-9"),
    }
    assert document["summaries"] == [] and document["message_count"] == 2


@pytest.mark.parametrize(
    ("call", "request_", "field"),
    [
        ("GetContext", GetContextRequest(conversation_id="c"), "tenant_id"),
        ("GetContext", GetContextRequest(tenant_id="acme"), "conversation_id"),
        ("GetConversation", MemoryGetConversationRequest(tenant_id="acme"), "conversation_id"),
        (
            "ListConversations",
            MemoryListConversationsRequest(tenant_id="acme", page_size=1_000),
            "page_size",
        ),
        (
            "ListConversations",
            MemoryListConversationsRequest(tenant_id="acme", page_token="not-a-token"),
            "page_token",
        ),
    ],
)
async def test_bad_arguments_name_the_field(
    memory: MemoryServiceStub, call: str, request_: Any, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await getattr(memory, call)(request_)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (failure.value.details() or "")


async def test_a_turn_without_tenant_goes_to_the_dead_letter_topic(platform: Platform) -> None:
    turn = make_turns("", new_id("nameless"), [("hi", "hello")])[0]
    await publish_turns(platform.topic("chat.turns"), [turn])
    consumer = AIOKafkaConsumer(
        platform.topic("chat.turns.dlq"),
        bootstrap_servers=KAFKA,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    letter = None
    try:
        deadline = time.monotonic() + 20
        while letter is None and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for record in (r for records in batch.values() for r in records):
                candidate = DeadLetter.FromString(record.value)
                if CompletedTurn.FromString(candidate.value).request_id == turn.request_id:
                    letter = candidate
    finally:
        await consumer.stop()
    assert letter is not None, "the turn reached the dead-letter topic"
    assert "tenant_id" in letter.error


async def test_retention_removes_conversations_idle_past_their_tenant_period(
    platform: Platform, mongo: Mongo, memory: MemoryServiceStub
) -> None:
    """The sweeper the service runs, on the service's database: a 100-day-old conversation
    goes for a tenant keeping 90 days (the default) and stays for one keeping 365."""
    old = datetime.now(UTC) - timedelta(days=100)
    expired, kept, recent = new_id("old"), new_id("old-kept"), new_id("recent")
    await publish_turns(
        platform.topic("chat.turns"),
        make_turns("acme", expired, pairs(1), start=old)
        + make_turns("longkeep", kept, pairs(1), start=old)
        + make_turns("acme", recent, pairs(1)),
    )
    for tenant, conversation in (("acme", expired), ("longkeep", kept), ("acme", recent)):
        await stored(mongo, platform.database, tenant, conversation, 2)
    store = ConversationStore(MONGO, platform.database, 5_000)
    try:
        tenants = TenantStore(store.client, platform.database, cache_ttl_s=0)
        await tenants.upsert(TenantConfig(tenant_id="longkeep", retention_days=365))
        sweeper = RetentionSweeper(
            store,
            tenants.get,
            default_retention_days=90,
            batch_size=100,
            tombstone_keep_s=3600,
        )
        assert await sweeper.retention_days("longkeep") == 365
        assert await sweeper.retention_days("acme") == 90
        assert await sweeper.sweep() >= 1
    finally:
        await store.close()
    db = mongo[platform.database]
    assert await db["messages"].count_documents({"conversation_id": expired}) == 0
    assert await db["messages"].count_documents({"conversation_id": kept}) == 2
    assert await db["messages"].count_documents({"conversation_id": recent}) == 2
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await memory.GetConversation(
            MemoryGetConversationRequest(tenant_id="acme", conversation_id=expired)
        )
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND


async def test_an_unreadable_summary_result_is_dead_lettered_and_the_consumer_goes_on(
    platform: Platform,
) -> None:
    topic = platform.topic("memory.summaries")
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            topic,
            b"\xff not protobuf",
            key=b"poison-summary",
            headers=[("sb-type", b"switchboard.v1.LlmResult"), ("sb-schema-version", b"1")],
        )
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        f"{topic}.dlq",
        bootstrap_servers=KAFKA,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    letter = None
    try:
        deadline = time.monotonic() + 20
        while letter is None and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for record in (r for records in batch.values() for r in records):
                candidate = DeadLetter.FromString(record.value)
                if candidate.value == b"\xff not protobuf":
                    letter = candidate
    finally:
        await consumer.stop()
    assert letter is not None and letter.source_topic == topic
    assert "cannot parse" in letter.error

    # The summary consumer committed past the poison record: it carries on.
    group = f"e2e-{platform.run_id}-memory-summaries"
    partition = TopicPartition(topic, letter.partition)

    async def committed() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(group, partitions=[partition])
        finally:
            await admin.close()
        found = offsets.get(partition)
        return found.offset if found is not None else -1

    assert await eventually(committed, lambda offset: offset > letter.offset) > letter.offset
