import asyncio

import pytest

from switchboard.gateway.replies import (
    Delivery,
    ReplyRouter,
    ReplyTimeoutError,
    StreamOverflowError,
)
from switchboard.v1.chat_pb2 import ChatEvent, Delta, Done


def delta(request_id: str, sequence: int, text: str = "x") -> ChatEvent:
    return ChatEvent(request_id=request_id, sequence=sequence, delta=Delta(text=text))


async def test_events_reach_their_stream_until_done() -> None:
    router = ReplyRouter(max_buffered_per_stream=10)
    stream = router.open("t", "r1")
    assert router.deliver("t", delta("r1", 1, "Hel")) is Delivery.DELIVERED
    assert router.deliver("t", delta("r1", 2, "lo")) is Delivery.DELIVERED
    assert (
        router.deliver("t", ChatEvent(request_id="r1", sequence=3, done=Done()))
        is Delivery.DELIVERED
    )
    received = [e async for e in stream.events(idle_timeout_s=1)]
    assert [e.sequence for e in received] == [1, 2, 3]


async def test_redelivered_events_are_dropped() -> None:
    router = ReplyRouter(max_buffered_per_stream=10)
    router.open("t", "r1")
    router.deliver("t", delta("r1", 1))
    router.deliver("t", delta("r1", 2))
    assert router.deliver("t", delta("r1", 2)) is Delivery.DUPLICATE
    assert router.deliver("t", delta("r1", 1)) is Delivery.DUPLICATE


async def test_a_dropped_done_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    router = ReplyRouter(max_buffered_per_stream=10)
    router.open("t", "r1")
    router.deliver("t", delta("r1", 1))
    router.deliver("t", delta("r1", 2))
    stale = ChatEvent(request_id="r1", sequence=2, done=Done())
    assert router.deliver("t", stale) is Delivery.DUPLICATE
    assert "r1: dropped done numbered 2, at or below the 2 delivered" in caplog.text


async def test_events_without_a_stream_are_orphaned() -> None:
    router = ReplyRouter(max_buffered_per_stream=10)
    assert router.deliver("t", delta("gone", 1)) is Delivery.ORPHANED
    router.open("t", "r1")
    router.close("t", "r1")
    assert router.deliver("t", delta("r1", 1)) is Delivery.ORPHANED
    assert router.open_streams == 0


async def test_a_full_buffer_ends_the_stream_instead_of_blocking_others() -> None:
    router = ReplyRouter(max_buffered_per_stream=2)
    slow = router.open("t", "slow")
    other = router.open("t", "other")
    assert router.deliver("t", delta("slow", 1)) is Delivery.DELIVERED
    assert router.deliver("t", delta("slow", 2)) is Delivery.DELIVERED
    assert router.deliver("t", delta("slow", 3)) is Delivery.OVERFLOW
    assert router.deliver("t", ChatEvent(request_id="other", sequence=1, done=Done())) is (
        Delivery.DELIVERED
    )
    with pytest.raises(StreamOverflowError):
        _ = [e async for e in slow.events(idle_timeout_s=1)]
    assert [e.sequence async for e in other.events(idle_timeout_s=1)] == [1]


async def test_silence_longer_than_the_idle_timeout_raises() -> None:
    router = ReplyRouter(max_buffered_per_stream=2)
    stream = router.open("t", "r1")
    with pytest.raises(ReplyTimeoutError):
        _ = [e async for e in stream.events(idle_timeout_s=0.01)]


async def test_the_router_tells_when_no_stream_is_open() -> None:
    router = ReplyRouter(max_buffered_per_stream=2)
    await asyncio.wait_for(router.wait_until_empty(), 1)
    router.open("t", "r1")
    router.open("t", "r2")
    waiter = asyncio.create_task(router.wait_until_empty())
    router.close("t", "r1")
    await asyncio.sleep(0)
    assert not waiter.done()
    router.close("t", "r2")
    await asyncio.wait_for(waiter, 1)
