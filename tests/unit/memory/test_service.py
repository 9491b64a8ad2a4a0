"""MemoryService over a real in-process gRPC server, with a fake store (no MongoDB)."""

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from pymongo.errors import ServerSelectionTimeoutError

from switchboard.conversation.records import ContextSnapshot, StoredMessage, SummaryState
from switchboard.memory.cache import ContextCache
from switchboard.memory.service import MemoryService
from switchboard.memory.settings import MemorySettings
from switchboard.v1 import memory_pb2_grpc
from switchboard.v1.chat_pb2 import RATING_UNSPECIFIED, RATING_UP, ROLE_ASSISTANT, ROLE_USER
from switchboard.v1.events_pb2 import CompletedTurn
from switchboard.v1.memory_pb2 import (
    Fact,
    GetContextRequest,
    MemoryGetConversationRequest,
    MemorySubmitFeedbackRequest,
)

NOW = datetime.now(UTC)
KEY = ("acme", "c1")


def turn(n: int) -> tuple[StoredMessage, StoredMessage]:
    return (
        StoredMessage(n * 10 + ROLE_USER, f"r{n}", ROLE_USER, f"question {n}", NOW),
        StoredMessage(n * 10 + ROLE_ASSISTANT, f"r{n}", ROLE_ASSISTANT, f"answer {n}", NOW),
    )


class FakeStore:
    def __init__(self) -> None:
        self.down = False
        self.snapshot = ContextSnapshot()
        self.whole_snapshot: ContextSnapshot | None = None  # what a `whole` read gives
        self.reads: list[str] = []
        self.feedback_after_calls = -1  # the call on which the rated turn "arrives"
        self.feedback_calls = 0

    def _check(self) -> None:
        if self.down:
            raise ServerSelectionTimeoutError("no servers")

    async def context_snapshot(self, *args: Any, whole: bool = False) -> ContextSnapshot:
        self._check()
        self.reads.append("whole" if whole else "window")
        if self.whole_snapshot is not None and whole:
            return self.whole_snapshot
        return self.snapshot

    async def conversation(self, *args: Any) -> dict[str, Any] | None:
        self._check()
        return None

    async def record_feedback(self, *args: Any) -> bool:
        self._check()
        self.feedback_calls += 1
        return self.feedback_calls == self.feedback_after_calls


@pytest.fixture
async def service() -> AsyncIterator[
    tuple[memory_pb2_grpc.MemoryServiceStub, FakeStore, ContextCache]
]:
    store = FakeStore()
    cache = ContextCache(10, 10, 60)
    settings = MemorySettings(feedback_wait_s=0.3, feedback_max_comment_chars=10)
    async with serving(MemoryService(store, cache, settings)) as stub:  # type: ignore[arg-type]
        yield stub, store, cache


@contextlib.asynccontextmanager
async def serving(service: MemoryService) -> AsyncIterator[memory_pb2_grpc.MemoryServiceStub]:
    """`service` on a local port, and a stub for it."""
    server = grpc.aio.server()
    memory_pb2_grpc.add_MemoryServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield memory_pb2_grpc.MemoryServiceStub(channel)
    finally:
        await server.stop(0)


async def test_a_store_outage_serves_the_cached_context_marked_degraded(service) -> None:  # type: ignore[no-untyped-def]
    stub, store, cache = service
    store.snapshot = ContextSnapshot(SummaryState(1, "earlier", 0), (), tuple(reversed(turn(1))))
    first = await stub.GetContext(GetContextRequest(tenant_id="acme", conversation_id="c1"))
    assert not first.degraded and [m.text for m in first.messages] == ["question 1", "answer 1"]
    cache.add(KEY, turn(2), [])  # received from chat.turns; its write is being retried
    store.down = True
    context = await stub.GetContext(GetContextRequest(tenant_id="acme", conversation_id="c1"))
    assert context.degraded and context.summary == "earlier"
    assert [m.text for m in context.messages] == [
        "question 1",
        "answer 1",
        "question 2",
        "answer 2",
    ]


async def test_an_outage_without_cache_degrades_to_nothing_but_answers(service) -> None:  # type: ignore[no-untyped-def]
    stub, store, _ = service
    store.down = True
    context = await stub.GetContext(GetContextRequest(tenant_id="acme", conversation_id="new"))
    assert context.degraded and list(context.messages) == [] and context.summary == ""


async def test_received_turns_not_yet_written_join_the_stored_context(service) -> None:  # type: ignore[no-untyped-def]
    stub, store, cache = service
    store.snapshot = ContextSnapshot(SummaryState(), (), tuple(reversed(turn(1))))
    cache.add(KEY, turn(1), [])
    cache.add(KEY, turn(2), [])
    context = await stub.GetContext(GetContextRequest(tenant_id="acme", conversation_id="c1"))
    assert not context.degraded
    assert [m.request_id for m in context.messages] == ["r1", "r1", "r2", "r2"]


async def test_the_next_turn_is_answered_without_a_store_read_once_its_previous_arrived(
    service,
) -> None:  # type: ignore[no-untyped-def]
    stub, store, cache = service
    store.snapshot = ContextSnapshot(SummaryState(), (), tuple(reversed(turn(1))))

    def read(request_id: str) -> GetContextRequest:
        return GetContextRequest(tenant_id="acme", conversation_id="c1", request_id=request_id)

    await stub.GetContext(read("r2"))
    assert store.reads == ["window"]
    cache.add(KEY, turn(2), [])  # r2 completed; its write may still be under way
    context = await stub.GetContext(read("r3"))
    assert store.reads == ["window"]  # answered from what this replica holds
    assert [m.request_id for m in context.messages] == ["r1", "r1", "r2", "r2"]
    # r3 has not arrived: the next read goes to the store again.
    await stub.GetContext(read("r4"))
    assert store.reads == ["window", "window"]


async def test_context_reuse_can_be_switched_off() -> None:
    store = FakeStore()
    store.snapshot = ContextSnapshot(SummaryState(), (), tuple(reversed(turn(1))))
    cache = ContextCache(10, 10, 60)
    settings = MemorySettings(context_reuse=False)
    async with serving(MemoryService(store, cache, settings)) as stub:  # type: ignore[arg-type]
        for request_id in ("r2", "r3"):
            await stub.GetContext(
                GetContextRequest(tenant_id="acme", conversation_id="c1", request_id=request_id)
            )
            cache.add(KEY, turn(2), [])
    assert store.reads == ["window", "window"]


async def test_the_older_messages_are_read_only_when_the_whole_window_fits(service) -> None:  # type: ignore[no-untyped-def]
    stub, store, _ = service
    window = tuple(m for n in (5, 4) for m in reversed(turn(n)))  # newest first
    older = tuple(m for n in (3, 2, 1) for m in reversed(turn(n)))
    store.snapshot = ContextSnapshot(SummaryState(), (), window, complete=False)
    store.whole_snapshot = ContextSnapshot(SummaryState(), (), (*window, *older))

    # A budget the window fills: older messages would not fit, so they are not read.
    small = await stub.GetContext(
        GetContextRequest(tenant_id="acme", conversation_id="c1", max_tokens=14)
    )
    assert store.reads == ["window"]
    assert [m.text for m in small.messages] == ["question 5", "answer 5"]

    store.reads.clear()
    large = await stub.GetContext(
        GetContextRequest(tenant_id="acme", conversation_id="c1", max_tokens=4_000)
    )
    assert store.reads == ["window", "whole"]
    assert [m.request_id for m in large.messages] == [
        f"r{n}" for n in (1, 1, 2, 2, 3, 3, 4, 4, 5, 5)
    ]


async def test_a_context_with_nothing_left_out_says_it_is_complete(service) -> None:  # type: ignore[no-untyped-def]
    stub, store, _ = service
    facts = (Fact(kind="order_number", value="A-1", request_id="r1"),)
    store.snapshot = ContextSnapshot(SummaryState(1, "earlier", 0), facts, tuple(reversed(turn(1))))
    whole = await stub.GetContext(GetContextRequest(tenant_id="acme", conversation_id="c1"))
    assert whole.complete and len(whole.messages) == 2

    # Each way of leaving something out: the budget (a message, the summary), a window that
    # did not reach the summary, an outage.
    cut = await stub.GetContext(
        GetContextRequest(tenant_id="acme", conversation_id="c1", max_tokens=14)
    )
    assert len(cut.messages) < 2 or not cut.summary
    assert not cut.complete
    store.snapshot = ContextSnapshot(SummaryState(), (), tuple(reversed(turn(1))), complete=False)
    store.whole_snapshot = ContextSnapshot(
        SummaryState(), (), tuple(reversed(turn(1))), complete=False
    )
    partial = await stub.GetContext(GetContextRequest(tenant_id="acme", conversation_id="c1"))
    assert not partial.complete
    store.down = True
    degraded = await stub.GetContext(GetContextRequest(tenant_id="acme", conversation_id="c1"))
    assert degraded.degraded and not degraded.complete


async def test_a_context_at_a_limit_is_not_complete() -> None:
    store = FakeStore()
    store.snapshot = ContextSnapshot(SummaryState(), (), tuple(reversed(turn(1))))
    settings = MemorySettings(context_scan_limit=2)  # the snapshot holds exactly 2 messages
    async with serving(MemoryService(store, ContextCache(10, 10, 60), settings)) as stub:  # type: ignore[arg-type]
        context = await stub.GetContext(GetContextRequest(tenant_id="acme", conversation_id="c1"))
    assert len(context.messages) == 2 and not context.complete


def completed(request_id: str, n: int, conversation: str = "c1") -> CompletedTurn:
    done = CompletedTurn(
        tenant_id="acme",
        conversation_id=conversation,
        request_id=request_id,
        user_message=f"my order {n}00{n} is late",
        assistant_message=f"answer {n}",
    )
    done.accepted_at.FromSeconds(1_800_000_000 + n)
    done.completed_at.FromSeconds(1_800_000_000 + n)
    return done


@pytest.mark.parametrize("cache_size", [10, 0])
async def test_a_read_ahead_includes_the_pending_turn_before_it_is_received(
    cache_size: int,
) -> None:
    store = FakeStore()
    store.snapshot = ContextSnapshot(SummaryState(), (), tuple(reversed(turn(1))))
    cache = ContextCache(cache_size, 10, 60)
    async with serving(MemoryService(store, cache, MemorySettings())) as stub:  # type: ignore[arg-type]
        context = await stub.GetContext(
            GetContextRequest(tenant_id="acme", conversation_id="c1", pending=completed("r2", 2))
        )
    assert [m.request_id for m in context.messages] == ["r1", "r1", "r2", "r2"]
    assert [(f.kind, f.value) for f in context.facts] == [("order_number", "2002")]
    assert context.complete


@pytest.mark.parametrize(
    ("pending", "names"),
    [
        (completed("r2", 2, conversation="other"), "another conversation"),
        (CompletedTurn(tenant_id="acme", conversation_id="c1"), "request_id"),
    ],
)
async def test_a_bad_pending_turn_is_refused_by_name(service, pending, names: str) -> None:  # type: ignore[no-untyped-def]
    stub, store, _ = service
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.GetContext(
            GetContextRequest(tenant_id="acme", conversation_id="c1", pending=pending)
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "pending" in (error.value.details() or "") and names in (error.value.details() or "")
    assert store.reads == []


async def test_other_reads_are_unavailable_during_an_outage(service) -> None:  # type: ignore[no-untyped-def]
    stub, store, _ = service
    store.down = True
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.GetConversation(
            MemoryGetConversationRequest(tenant_id="acme", conversation_id="c1")
        )
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_rating_waits_for_its_turn_then_gives_up(service) -> None:  # type: ignore[no-untyped-def]
    stub, store, _ = service
    store.feedback_after_calls = 3
    request = MemorySubmitFeedbackRequest(tenant_id="acme", request_id="r1", rating=RATING_UP)
    await stub.SubmitFeedback(request)
    assert store.feedback_calls == 3
    store.feedback_calls, store.feedback_after_calls = 0, -1
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.SubmitFeedback(request)
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    assert "r1" in (failure.value.details() or "")


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (MemorySubmitFeedbackRequest(tenant_id="acme", request_id="r1"), "rating"),
        (
            MemorySubmitFeedbackRequest(
                tenant_id="acme", request_id="r1", rating=RATING_UP, comment="x" * 11
            ),
            "comment",
        ),
        (MemorySubmitFeedbackRequest(tenant_id="acme", rating=RATING_UP), "request_id"),
        (
            MemorySubmitFeedbackRequest(
                tenant_id="acme",
                request_id="r1",
                rating=RATING_UNSPECIFIED + 7,  # type: ignore[arg-type]
            ),
            "rating",
        ),
    ],
)
async def test_bad_feedback_names_the_field(service, request_, field: str) -> None:  # type: ignore[no-untyped-def]
    stub, store, _ = service
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.SubmitFeedback(request_)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (failure.value.details() or "")
    assert store.feedback_calls == 0
