"""The idempotency records and recorded reply streams against a real Redis."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from switchboard.gateway.idempotency import (
    OwnerGoneError,
    RedisRequestStore,
    RequestRecord,
    RequestState,
    RequestVanishedError,
    fingerprint,
)
from switchboard.gateway.replies import ReplyTimeoutError
from switchboard.v1.chat_pb2 import ChatEvent, ChatOptions, ChatRequest, Delta, Done, Started


def make_store(
    redis: Redis, *, buffer_events: int = 64, batch_window_s: float = 0.01
) -> RedisRequestStore:
    return RedisRequestStore(
        redis,
        running_ttl_s=60,
        done_ttl_s=30,
        poll_s=0.05,
        buffer_events=buffer_events,
        batch_window_s=batch_window_s,
    )


@pytest.fixture
async def store(redis: Redis) -> AsyncIterator[RedisRequestStore]:
    yield make_store(redis)


def rid() -> str:
    return f"unit-{uuid.uuid4()}"


def record(owner: str = "chat.replies.a") -> RequestRecord:
    return RequestRecord("acme", "print", owner, RequestState.RUNNING)


async def alive(_owner: str) -> bool:
    return True


def events_for(request_id: str) -> list[ChatEvent]:
    return [
        ChatEvent(request_id=request_id, started=Started(request_id=request_id)),
        ChatEvent(request_id=request_id, sequence=1, delta=Delta(text="Hel")),
        ChatEvent(request_id=request_id, sequence=2, delta=Delta(text="lo")),
        ChatEvent(request_id=request_id, sequence=3, done=Done(model="m")),
    ]


async def test_exactly_one_claim_wins(store: RedisRequestStore) -> None:
    request_id = rid()
    try:
        results = await asyncio.gather(*(store.claim(request_id, record()) for _ in range(5)))
        assert sum(r is None for r in results) == 1
        assert all(r == record() for r in results if r is not None)
        assert await store.get(request_id) == record()
    finally:
        await store.release(request_id)
    assert await store.get(request_id) is None


async def test_a_follower_attaches_then_the_reply_is_replayed(
    store: RedisRequestStore, redis: Redis
) -> None:
    request_id = rid()
    events = events_for(request_id)
    assert await store.claim(request_id, record()) is None
    try:
        recorder = store.recorder(request_id, record())
        recorder.add(events[0])
        recorder.add(events[1])

        async def follow() -> list[ChatEvent]:
            return [e async for e in store.follow(request_id, 5.0, alive)]

        attached = asyncio.create_task(follow())
        await asyncio.sleep(0.1)  # the follower is now blocked on XREAD (bounded by poll_s)
        recorder.add(events[2])
        recorder.add(events[3])
        await recorder.finish()
        assert await asyncio.wait_for(attached, 5) == events
        stored = await store.get(request_id)
        assert stored is not None and stored.state is RequestState.DONE
        assert 0 < await redis.ttl(f"sb:req:{{{request_id}}}:events") <= 30
        assert [e async for e in store.follow(request_id, 1.0, alive)] == events
    finally:
        await store.release(request_id)


async def test_a_running_reply_is_recorded_in_batches_and_its_end_with_the_last(
    redis: Redis,
) -> None:
    store = make_store(redis, batch_window_s=0.2)
    request_id = rid()
    events = events_for(request_id)
    events_key = f"sb:req:{{{request_id}}}:events"
    assert await store.claim(request_id, record()) is None
    try:
        recorder = store.recorder(request_id, record())
        recorder.add(events[0])
        recorder.add(events[1])
        assert await redis.xlen(events_key) == 0, "waits for the batch window"
        for _ in range(100):  # bounded: the window is 0.2 s
            if await redis.xlen(events_key) == 2:
                break
            await asyncio.sleep(0.02)
        assert await redis.xlen(events_key) == 2, "one batch once the window closed"
        recorder.add(events[2])
        recorder.add(events[3])
        await recorder.finish()  # does not wait for the window: the reply ended
        stored = await store.get(request_id)
        assert stored is not None and stored.state is RequestState.DONE
        assert [e async for e in store.follow(request_id, 1.0, alive)] == events
    finally:
        await store.release(request_id)


async def test_a_recording_that_overflowed_ends_with_a_data_loss_error(redis: Redis) -> None:
    store = make_store(redis, buffer_events=2, batch_window_s=60)
    request_id = rid()
    events = events_for(request_id)
    assert await store.claim(request_id, record()) is None
    try:
        recorder = store.recorder(request_id, record())
        for event in events:  # the third overflows the buffer of 2: recording stops
            recorder.add(event)
        await recorder.finish()
        replayed = [e async for e in store.follow(request_id, 1.0, alive)]
        assert [e.error.code for e in replayed] == ["DATA_LOSS"]
        assert replayed[0].sequence == events[1].sequence + 1
        stored = await store.get(request_id)
        assert stored is not None and stored.state is RequestState.DONE
    finally:
        await store.release(request_id)


async def test_a_released_claim_is_not_brought_back_by_a_late_completion(
    store: RedisRequestStore,
) -> None:
    request_id = rid()
    assert await store.claim(request_id, record()) is None
    recorder = store.recorder(request_id, record())
    await store.release(request_id)
    recorder.add(events_for(request_id)[0])
    await recorder.finish()
    try:
        assert await store.get(request_id) is None
    finally:
        await store.release(request_id)


async def test_a_follower_is_told_when_the_owner_died_or_the_claim_vanished(
    store: RedisRequestStore,
) -> None:
    request_id = rid()
    await store.claim(request_id, record("chat.replies.gone"))
    try:

        async def dead(_owner: str) -> bool:
            return False

        with pytest.raises(OwnerGoneError):
            _ = [e async for e in store.follow(request_id, 5.0, dead)]
        with pytest.raises(ReplyTimeoutError):
            _ = [e async for e in store.follow(request_id, 0.1, alive)]
    finally:
        await store.release(request_id)
    with pytest.raises(RequestVanishedError):
        _ = [e async for e in store.follow(request_id, 5.0, alive)]


async def test_followers_are_counted(store: RedisRequestStore) -> None:
    request_id = rid()
    try:
        assert await store.followers(request_id) == 0
        await store.follower_joined(request_id)
        await store.follower_joined(request_id)
        await store.follower_left(request_id)
        assert await store.followers(request_id) == 1
    finally:
        await store.release(request_id)
    assert await store.followers(request_id) == 0


def test_the_fingerprint_covers_everything_the_caller_sent_but_the_request_id() -> None:
    base = ChatRequest(conversation_id="c", message="m", user_id="u", request_id="r1")
    same = ChatRequest(conversation_id="c", message="m", user_id="u", request_id="r2")
    assert fingerprint(base) == fingerprint(same)
    for other in (
        ChatRequest(conversation_id="c2", message="m", user_id="u"),
        ChatRequest(conversation_id="c", message="m2", user_id="u"),
        ChatRequest(conversation_id="c", message="m", user_id="u2"),
        ChatRequest(conversation_id="c", message="m", user_id="u", options=ChatOptions(tier="x")),
        # Field boundaries count: "ab"+"c" is not "a"+"bc".
        ChatRequest(conversation_id="cm", message="", user_id="u"),
    ):
        assert fingerprint(other) != fingerprint(base)
