"""ChatService over a real in-process gRPC server, with fakes for Kafka and Redis."""

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from switchboard.common.tenants import hash_api_key
from switchboard.gateway.auth import ApiKeyAuthenticator
from switchboard.gateway.replies import ReplyRouter
from switchboard.gateway.service import BackendUnavailableError, ChatService, HeldLock
from switchboard.gateway.validation import ChatLimits
from switchboard.v1 import chat_pb2_grpc
from switchboard.v1.chat_pb2 import ChatEvent, ChatRequest, Delta, Done
from switchboard.v1.events_pb2 import CancelGeneration, TurnRequest

KEY = [("authorization", "Bearer k")]


class FakeLock:
    def __init__(self, locks: "FakeLocks", key: str) -> None:
        self.locks, self.key = locks, key

    async def release(self) -> None:
        self.locks.held.discard(self.key)


class FakeLocks:
    def __init__(self) -> None:
        self.held: set[str] = set()
        self.down = False

    async def acquire(
        self, tenant_id: str, conversation_id: str, request_id: str
    ) -> HeldLock | None:
        if self.down:
            raise BackendUnavailableError("Redis is unreachable")
        key = f"{tenant_id}:{conversation_id}"
        if key in self.held:
            return None
        self.held.add(key)
        return FakeLock(self, key)


class ScriptedPublisher:
    """Answers each published turn with scripted reply events through the router."""

    def __init__(self, router: ReplyRouter, locks: FakeLocks) -> None:
        self.router = router
        self.locks = locks
        self.turns: list[TurnRequest] = []
        self.cancels: list[CancelGeneration] = []
        self.down = False
        self.hold_reply = False
        self.locked_when_done: list[bool] = []

    async def publish_turn(self, turn: TurnRequest) -> None:
        if self.down:
            raise BackendUnavailableError("Kafka did not accept the message")
        self.turns.append(turn)
        if not self.hold_reply:
            asyncio.get_running_loop().call_soon(self._reply, turn)

    def _reply(self, turn: TurnRequest) -> None:
        rid = turn.request_id
        self.router.deliver(ChatEvent(request_id=rid, sequence=1, delta=Delta(text="Hi")))
        self.router.deliver(ChatEvent(request_id=rid, sequence=1, delta=Delta(text="Hi")))  # dup
        self.router.deliver(ChatEvent(request_id=rid, sequence=2, delta=Delta(text=" there")))
        self.router.deliver(
            ChatEvent(request_id=rid, sequence=3, done=Done(model="m", tier="cheap"))
        )

    async def publish_cancel(self, cancel: CancelGeneration) -> None:
        self.cancels.append(cancel)


@pytest.fixture
async def gateway() -> AsyncIterator[
    tuple[chat_pb2_grpc.ChatServiceStub, ScriptedPublisher, FakeLocks]
]:
    router = ReplyRouter(16)
    locks = FakeLocks()
    publisher = ScriptedPublisher(router, locks)
    service = ChatService(
        authenticator=ApiKeyAuthenticator({hash_api_key("k"): "acme"}),
        limits=ChatLimits(100, 10, 4, 1000),
        publisher=publisher,
        locks=locks,
        router=router,
        reply_topic="chat.replies.test",
        reply_idle_timeout_s=0.5,
    )
    server = grpc.aio.server()
    chat_pb2_grpc.add_ChatServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield chat_pb2_grpc.ChatServiceStub(channel), publisher, locks
    await server.stop(0)


async def test_a_turn_is_published_with_the_tenant_from_the_key_and_streamed_back(gateway) -> None:  # type: ignore[no-untyped-def]
    stub, publisher, locks = gateway
    events = [e async for e in stub.Chat(ChatRequest(message="hello", user_id="u"), metadata=KEY)]
    assert [e.WhichOneof("event") for e in events] == ["started", "delta", "delta", "done"]
    assert "".join(e.delta.text for e in events) == "Hi there"
    turn = publisher.turns[0]
    assert turn.tenant_id == "acme" and turn.reply_topic == "chat.replies.test"
    assert turn.conversation_id == events[0].started.conversation_id
    assert turn.request_id == events[0].started.request_id and turn.accepted_at.seconds > 0
    assert locks.held == set() and publisher.cancels == []


async def test_the_conversation_is_free_when_the_client_reads_done(gateway) -> None:  # type: ignore[no-untyped-def]
    stub, _, locks = gateway
    kinds = []
    async for event in stub.Chat(ChatRequest(message="hello", conversation_id="c1"), metadata=KEY):
        kinds.append(event.WhichOneof("event"))
        if kinds[-1] == "done":
            assert locks.held == set()
    assert kinds[-1] == "done"


async def test_a_second_request_while_generating_fails_precondition(gateway) -> None:  # type: ignore[no-untyped-def]
    stub, publisher, _ = gateway
    publisher.hold_reply = True
    first = stub.Chat(ChatRequest(message="one", conversation_id="c1"), metadata=KEY)
    assert (await first.read()).WhichOneof("event") == "started"
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        _ = [
            e
            async for e in stub.Chat(ChatRequest(message="two", conversation_id="c1"), metadata=KEY)
        ]
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "c1" in (failure.value.details() or "")
    first.cancel()


async def test_a_client_that_leaves_mid_reply_cancels_the_generation(gateway) -> None:  # type: ignore[no-untyped-def]
    stub, publisher, locks = gateway
    publisher.hold_reply = True
    call = stub.Chat(ChatRequest(message="one", conversation_id="c1"), metadata=KEY)
    started = await call.read()
    call.cancel()
    for _ in range(100):
        if publisher.cancels and not locks.held:
            break
        await asyncio.sleep(0.01)
    assert [c.request_id for c in publisher.cancels] == [started.started.request_id]
    assert locks.held == set()


async def test_silence_ends_the_stream_with_a_deadline_error(gateway) -> None:  # type: ignore[no-untyped-def]
    stub, publisher, locks = gateway
    publisher.hold_reply = True
    events = [e async for e in stub.Chat(ChatRequest(message="one"), metadata=KEY)]
    assert events[-1].error.code == "DEADLINE_EXCEEDED"
    assert locks.held == set()


@pytest.mark.parametrize("backend", ["kafka", "redis"])
async def test_an_unreachable_backend_is_unavailable(gateway, backend: str) -> None:  # type: ignore[no-untyped-def]
    stub, publisher, locks = gateway
    if backend == "kafka":
        publisher.down = True
    else:
        locks.down = True
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        _ = [e async for e in stub.Chat(ChatRequest(message="hello"), metadata=KEY)]
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert locks.held == set()


async def test_conversation_methods_answer_unimplemented_for_now(gateway) -> None:  # type: ignore[no-untyped-def]
    from switchboard.v1.chat_pb2 import GetConversationRequest

    stub, _, _ = gateway
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.GetConversation(GetConversationRequest(conversation_id="c"), metadata=KEY)
    assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED
