"""The gateway's conversation methods against an in-process fake memory service."""

import socket
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from switchboard.common.tenants import TenantConfig
from switchboard.gateway.auth import TenantAuthenticator
from switchboard.gateway.conversations import ConversationMethods, MemoryClient
from switchboard.gateway.directory import DirectoryUnavailableError, MemoryBackedDirectory
from switchboard.gateway.replies import ReplyRouter
from switchboard.gateway.service import ChatService
from switchboard.gateway.validation import ChatLimits
from switchboard.v1 import chat_pb2_grpc, memory_pb2_grpc
from switchboard.v1.chat_pb2 import (
    RATING_DOWN,
    RATING_UNSPECIFIED,
    Conversation,
    ConversationSummary,
    DeleteConversationRequest,
    DeleteConversationResponse,
    GetConversationRequest,
    ListConversationsRequest,
    ListConversationsResponse,
    SubmitFeedbackRequest,
    SubmitFeedbackResponse,
)

from .fakes import (
    FakeConversationMarkers,
    FakeDirectory,
    FakeQuotas,
    MemoryRequestStore,
    SequentialAdmission,
)

KEY = [("authorization", "Bearer k")]
# gRPC shares ports (SO_REUSEPORT) by default: port 0 may then land on a port another
# process of the test run listens on, and calls reach that one.
EXCLUSIVE_PORT = [("grpc.so_reuseport", 0)]


class FakeMemory(memory_pb2_grpc.MemoryServiceServicer):
    """Records what it is asked; fails with `failure` when set."""

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.failure: tuple[grpc.StatusCode, str] | None = None

    async def _answer(self, request: Any, context: Any, response: Any) -> Any:
        self.requests.append(request)
        if self.failure:
            await context.abort(*self.failure)
        return response

    async def GetConversation(self, request, context):  # type: ignore[no-untyped-def]
        return await self._answer(
            request, context, Conversation(conversation_id=request.conversation_id, user_id="u")
        )

    async def ListConversations(self, request, context):  # type: ignore[no-untyped-def]
        page = ListConversationsResponse(
            conversations=[ConversationSummary(conversation_id="c1")], next_page_token="next"
        )
        return await self._answer(request, context, page)

    async def DeleteConversation(self, request, context):  # type: ignore[no-untyped-def]
        return await self._answer(request, context, DeleteConversationResponse())

    async def SubmitFeedback(self, request, context):  # type: ignore[no-untyped-def]
        return await self._answer(request, context, SubmitFeedbackResponse())


class NoPublisher:
    async def publish_turn(self, turn: Any) -> None:
        raise AssertionError("no chat in these tests")

    async def publish_cancel(self, cancel: Any) -> None:
        raise AssertionError("no chat in these tests")


class NoLocks:
    async def acquire(self, tenant_id: str, conversation_id: str, request_id: str) -> None:
        raise AssertionError("no chat in these tests")


async def _always_alive(owner: str) -> bool:
    return True


async def _gateway(
    memory_target: str, markers: FakeConversationMarkers | None = None
) -> tuple[grpc.aio.Server, int, MemoryClient]:
    memory = MemoryClient(memory_target)
    directory = MemoryBackedDirectory(
        markers or FakeConversationMarkers(), memory.stub, timeout_s=2.0
    )
    requests = MemoryRequestStore()
    service = ChatService(
        authenticator=TenantAuthenticator(FakeDirectory({"k": TenantConfig(tenant_id="acme")})),
        limits=ChatLimits(100, 10, 4, 1000),
        admission=SequentialAdmission(FakeQuotas(), requests, NoLocks(), directory),
        requests=requests,
        owner_alive=_always_alive,
        publisher=NoPublisher(),
        conversation_directory=directory,
        router=ReplyRouter(4),
        reply_topic="chat.replies.test",
        reply_idle_timeout_s=0.5,
        conversations=ConversationMethods(memory.stub, timeout_s=2.0, directory=directory),
    )
    server = grpc.aio.server(options=EXCLUSIVE_PORT)
    chat_pb2_grpc.add_ChatServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port, memory


@pytest.fixture
def markers() -> FakeConversationMarkers:
    """The gateway's conversation markers; acme has "c1"."""
    return FakeConversationMarkers(("acme", "c1"))


@pytest.fixture
async def memory_server() -> AsyncIterator[tuple[FakeMemory, str]]:
    fake = FakeMemory()
    server = grpc.aio.server(options=EXCLUSIVE_PORT)
    memory_pb2_grpc.add_MemoryServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield fake, f"127.0.0.1:{port}"
    await server.stop(0)


@pytest.fixture
async def setup(
    memory_server: tuple[FakeMemory, str], markers: FakeConversationMarkers
) -> AsyncIterator[tuple[chat_pb2_grpc.ChatServiceStub, FakeMemory]]:
    fake, target = memory_server
    server, port, memory = await _gateway(target, markers)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield chat_pb2_grpc.ChatServiceStub(channel), fake
    await server.stop(0)
    await memory.close()


async def test_every_method_forwards_the_tenant_of_the_key(setup) -> None:  # type: ignore[no-untyped-def]
    stub, fake = setup
    conversation = await stub.GetConversation(
        GetConversationRequest(conversation_id="c1"), metadata=KEY
    )
    assert conversation.conversation_id == "c1"
    page = await stub.ListConversations(
        ListConversationsRequest(user_id="u", page_size=5, page_token="tok"), metadata=KEY
    )
    assert page.next_page_token == "next" and page.conversations[0].conversation_id == "c1"
    await stub.DeleteConversation(DeleteConversationRequest(conversation_id="c1"), metadata=KEY)
    await stub.SubmitFeedback(
        SubmitFeedbackRequest(request_id="r1", rating=RATING_DOWN, comment="meh"), metadata=KEY
    )
    assert [r.tenant_id for r in fake.requests] == ["acme"] * 4
    listing, feedback = fake.requests[1], fake.requests[3]
    assert (listing.user_id, listing.page_size, listing.page_token) == ("u", 5, "tok")
    assert (feedback.request_id, feedback.rating, feedback.comment) == ("r1", RATING_DOWN, "meh")


@pytest.mark.parametrize("metadata", [[], [("authorization", "Bearer wrong")]])
async def test_unauthenticated_calls_never_reach_memory(setup, metadata) -> None:  # type: ignore[no-untyped-def]
    stub, fake = setup
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.GetConversation(GetConversationRequest(conversation_id="c1"), metadata=metadata)
    assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert fake.requests == []


@pytest.mark.parametrize(
    ("call", "field"),
    [
        ("GetConversation", "conversation_id"),
        ("DeleteConversation", "conversation_id"),
        ("SubmitFeedback", "request_id"),
    ],
)
async def test_missing_ids_are_invalid_arguments_named(setup, call: str, field: str) -> None:  # type: ignore[no-untyped-def]
    stub, fake = setup
    request = {
        "GetConversation": GetConversationRequest(),
        "DeleteConversation": DeleteConversationRequest(conversation_id="bad id!"),
        "SubmitFeedback": SubmitFeedbackRequest(rating=RATING_DOWN),
    }[call]
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await getattr(stub, call)(request, metadata=KEY)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (failure.value.details() or "")
    assert fake.requests == []


async def test_feedback_needs_a_rating(setup) -> None:  # type: ignore[no-untyped-def]
    stub, fake = setup
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.SubmitFeedback(
            SubmitFeedbackRequest(request_id="r1", rating=RATING_UNSPECIFIED), metadata=KEY
        )
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "rating" in (failure.value.details() or "")
    assert fake.requests == []


@pytest.mark.parametrize(
    ("memory_code", "details", "client_code", "client_details"),
    [
        (grpc.StatusCode.NOT_FOUND, "conversation 'c1' not found", None, None),
        (grpc.StatusCode.INVALID_ARGUMENT, "page_token is not a token", None, None),
        (
            grpc.StatusCode.UNAVAILABLE,
            "mongo is down",
            grpc.StatusCode.UNAVAILABLE,
            "conversation store is unavailable",
        ),
        (grpc.StatusCode.INTERNAL, "stack trace", grpc.StatusCode.INTERNAL, "failed"),
    ],
)
async def test_memory_statuses_map_to_client_statuses(  # type: ignore[no-untyped-def]
    setup, memory_code, details, client_code, client_details
) -> None:
    stub, fake = setup
    fake.failure = (memory_code, details)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.GetConversation(GetConversationRequest(conversation_id="c1"), metadata=KEY)
    assert failure.value.code() == (client_code or memory_code)
    assert (client_details or details) in (failure.value.details() or "")
    if memory_code == grpc.StatusCode.INTERNAL:
        assert "stack trace" not in (failure.value.details() or "")


async def test_an_unreachable_memory_service_is_unavailable() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server, gateway_port, memory = await _gateway(f"127.0.0.1:{port}")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway_port}") as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await stub.ListConversations(ListConversationsRequest(), metadata=KEY)
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)
        await memory.close()


# ---- the conversation directory ----------------------------------------------------------


async def test_a_deleted_conversation_is_forgotten_by_the_directory(  # type: ignore[no-untyped-def]
    setup, markers: FakeConversationMarkers
) -> None:
    stub, fake = setup
    await stub.DeleteConversation(DeleteConversationRequest(conversation_id="c1"), metadata=KEY)
    assert fake.requests[-1].conversation_id == "c1"
    assert ("acme", "c1") not in markers.ids


@pytest.mark.parametrize(
    ("memory_code", "client_code", "forgotten"),
    [
        # Memory has no such conversation (or deleted it before a forget that failed).
        (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.NOT_FOUND, True),
        # Not deleted: the conversation stays known.
        (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE, False),
        (grpc.StatusCode.INTERNAL, grpc.StatusCode.INTERNAL, False),
    ],
)
async def test_a_failed_delete_forgets_only_what_memory_does_not_have(  # type: ignore[no-untyped-def]
    setup, markers: FakeConversationMarkers, memory_code, client_code, forgotten
) -> None:
    stub, fake = setup
    fake.failure = (memory_code, "conversation c1 not found")
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.DeleteConversation(DeleteConversationRequest(conversation_id="c1"), metadata=KEY)
    assert failure.value.code() == client_code
    assert (("acme", "c1") not in markers.ids) is forgotten


async def test_a_delete_whose_marker_cannot_be_removed_is_unavailable(  # type: ignore[no-untyped-def]
    setup, markers: FakeConversationMarkers
) -> None:
    stub, _ = setup
    markers.down = True
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.DeleteConversation(DeleteConversationRequest(conversation_id="c1"), metadata=KEY)
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "retry DeleteConversation" in (failure.value.details() or "")


async def test_the_directory_asks_memory_on_a_marker_miss(
    memory_server: tuple[FakeMemory, str],
) -> None:
    fake, target = memory_server
    markers = FakeConversationMarkers(("acme", "c1"))
    memory = MemoryClient(target)
    directory = MemoryBackedDirectory(markers, memory.stub, timeout_s=2.0)
    try:
        assert await directory.known("acme", "c1")
        assert fake.requests == [], "a marker answers alone"
        assert await directory.known("acme", "c2")  # memory has it: marked again
        assert ("acme", "c2") in markers.ids
        assert fake.requests[-1].tenant_id == "acme"
        assert fake.requests[-1].conversation_id == "c2"
        fake.failure = (grpc.StatusCode.NOT_FOUND, "conversation c3 not found")
        assert not await directory.known("acme", "c3")
        assert ("acme", "c3") not in markers.ids
        for code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            fake.failure = (code, "mongo is down")
            with pytest.raises(DirectoryUnavailableError):
                await directory.known("acme", "c4")
    finally:
        await memory.close()


async def test_the_directory_is_unavailable_when_memory_cannot_be_reached() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    memory = MemoryClient(f"127.0.0.1:{port}")
    try:
        directory = MemoryBackedDirectory(FakeConversationMarkers(), memory.stub, timeout_s=1.0)
        with pytest.raises(DirectoryUnavailableError):
            await directory.known("acme", "c1")
    finally:
        await memory.close()
