"""The orchestrator's Redis and MongoDB adapters against the real servers."""

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from switchboard.orchestrator.adapters import MongoTicketStore, RedisResponseCache, RedisTurnStore
from switchboard.orchestrator.router import Route
from switchboard.orchestrator.tools import ToolContext
from switchboard.orchestrator.turns import TurnState
from switchboard.v1.events_pb2 import ChatMessage, LlmTask, ToolSpec, TurnRequest

from .conftest import MONGO, REDIS

pytestmark = pytest.mark.e2e


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS, socket_timeout=2, socket_connect_timeout=2)
    yield client
    await client.aclose()


async def test_turn_state_round_trips_with_a_ttl(redis: Redis) -> None:
    store = RedisTurnStore(redis, ttl_s=30)
    request_id = f"adapter-{uuid.uuid4()}"
    state = TurnState(
        turn=TurnRequest(request_id=request_id, tenant_id="demo", message="hi"),
        task=LlmTask(
            task_id="t2",
            messages=[ChatMessage(text="hi")],
            tools=[ToolSpec(name="order_status")],
            sequence_base=6,
        ),
        route=Route("frontier", "why", 0.85, True, ("reasoning",)),
        stored_message="hi [EMAIL]",
        previous_task_id="t1",
        tool_rounds=1,
        texts=["Let me check. "],
        input_tokens=10,
        output_tokens=5,
        cost_usd=0.25,
        exchanges=[{"id": "c", "name": "n", "arguments": "{}", "status": "failed", "result": "x"}],
        flags=["redacted:EMAIL"],
        cascaded=True,
        cache_key="k",
        ticket_id="T-1",
    )
    assert await store.create(state) is state
    later = TurnState(
        turn=state.turn, task=LlmTask(task_id="t3"), route=state.route, stored_message="x"
    )
    assert await store.create(later) == state, "a turn's first state is created once"
    assert await store.load("other", request_id) is None, "scoped by tenant"
    await store.save(later)
    assert await store.load("demo", request_id) == later
    await store.save(state)
    loaded = await store.load("demo", request_id)
    assert loaded == state
    ttl = await redis.ttl(f"sb:demo:turn:{request_id}")
    assert 0 < ttl <= 30
    assert not await store.finished("demo", request_id)
    assert await store.lookup("demo", request_id) == (state, False)
    assert await store.lookup("other", request_id) == (None, False), "scoped by tenant"
    await store.forget("demo", request_id)
    assert await store.load("demo", request_id) is None
    assert await store.finished("demo", request_id) and not await store.finished("o", request_id)
    assert await store.lookup("demo", request_id) == (None, True)


async def test_the_response_cache_expires_and_ignores_garbage(redis: Redis) -> None:
    cache = RedisResponseCache(redis)
    key = f"sb:test:cache:{uuid.uuid4().hex}"
    await cache.put(key, {"text": "We open at 9.", "model": "m", "tier": "cheap"}, ttl_s=30)
    assert await cache.get(key) == {"text": "We open at 9.", "model": "m", "tier": "cheap"}
    assert 0 < await redis.ttl(key) <= 30
    await redis.set(key, b"not json", ex=30)
    assert await cache.get(key) is None
    await redis.delete(key)
    assert await cache.get(key) is None


async def test_tickets_are_opened_once_per_request() -> None:
    database = f"adapters_{uuid.uuid4().hex[:8]}"
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        MONGO, serverSelectionTimeoutMS=5_000
    )
    try:
        tickets = MongoTicketStore(client, database)
        context = ToolContext("demo", "c1", "r1", "u1")
        first = await tickets.open_ticket(context, "asked for a human", "normal")
        again = await tickets.open_ticket(context, "asked again", "high")
        other = await tickets.open_ticket(ToolContext("demo", "c1", "r2", "u1"), "x", "low")
        assert first == again != other
        docs = await client[database]["tickets"].find({}).sort("request_id").to_list()
        assert [(d["_id"], d["reason"], d["priority"]) for d in docs] == [
            (first, "asked for a human", "normal"),
            (other, "x", "low"),
        ]
        assert {d["tenant_id"] for d in docs} == {"demo"} and docs[0]["status"] == "open"
    finally:
        # Not dropped: see tests/e2e/conftest.py on FerretDB 1.24 and dropped databases.
        await client.close()
