"""ChatService over a real in-process gRPC server, with fakes for MongoDB, Kafka and Redis."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]

from switchboard.common.tenants import TenantConfig
from switchboard.gateway.app import drain
from switchboard.gateway.auth import TenantAuthenticator
from switchboard.gateway.directory import MemoryBackedDirectory
from switchboard.gateway.idempotency import RequestRecord, RequestState, fingerprint
from switchboard.gateway.quotas import Refusal
from switchboard.gateway.replies import ReplyRouter
from switchboard.gateway.service import ChatService
from switchboard.gateway.validation import ChatLimits
from switchboard.v1 import chat_pb2_grpc
from switchboard.v1.chat_pb2 import ChatEvent, ChatOptions, ChatRequest, GetConversationRequest
from switchboard.v1.events_pb2 import TurnRequest

from .fakes import (
    FakeConversationMarkers,
    FakeConversationReader,
    FakeDirectory,
    FakeLocks,
    FakeQuotas,
    MemoryRequestStore,
    ScriptedPublisher,
    SequentialAdmission,
)

KEY = [("authorization", "Bearer k")]
# gRPC shares ports (SO_REUSEPORT) by default: port 0 may then land on a port another
# process of the test run listens on, and calls reach that one.
EXCLUSIVE_PORT = [("grpc.so_reuseport", 0)]
OTHER_KEY = [("authorization", "Bearer k2")]
REPLY_TOPIC = "chat.replies.test"


@dataclass
class Gateway:
    stub: chat_pb2_grpc.ChatServiceStub
    publisher: ScriptedPublisher
    locks: FakeLocks
    quotas: FakeQuotas
    requests: MemoryRequestStore
    directory: FakeDirectory
    markers: FakeConversationMarkers
    memory: FakeConversationReader
    router: ReplyRouter
    server: grpc.aio.Server = None
    dead_owners: set[str] = field(default_factory=set)


@pytest.fixture
async def gateway(request: pytest.FixtureRequest) -> AsyncIterator[Gateway]:
    """The service; `indirect` parametrization sets its disconnect grace (default 0)."""
    router = ReplyRouter(16)
    directory = FakeDirectory(
        {"k": TenantConfig(tenant_id="acme"), "k2": TenantConfig(tenant_id="globex")}
    )
    dead_owners: set[str] = set()

    async def owner_alive(owner: str) -> bool:
        return owner not in dead_owners

    gw = Gateway(
        stub=None,  # type: ignore[arg-type]
        publisher=ScriptedPublisher(router),
        locks=FakeLocks(),
        quotas=FakeQuotas(),
        requests=MemoryRequestStore(),
        directory=directory,
        # "c1" is a conversation acme already has.
        markers=FakeConversationMarkers(("acme", "c1")),
        memory=FakeConversationReader(),
        router=router,
        dead_owners=dead_owners,
    )
    conversations = MemoryBackedDirectory(gw.markers, gw.memory, timeout_s=1.0)
    service = ChatService(
        authenticator=TenantAuthenticator(directory),
        limits=ChatLimits(100, 10, 4, 1000),
        admission=SequentialAdmission(gw.quotas, gw.requests, gw.locks, conversations),
        requests=gw.requests,
        owner_alive=owner_alive,
        publisher=gw.publisher,
        conversation_directory=conversations,
        router=router,
        reply_topic=REPLY_TOPIC,
        reply_idle_timeout_s=1.0,
        disconnect_grace_s=getattr(request, "param", 0.0),
    )
    server = gw.server = grpc.aio.server(options=EXCLUSIVE_PORT)
    chat_pb2_grpc.add_ChatServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        gw.stub = chat_pb2_grpc.ChatServiceStub(channel)
        yield gw
    await service.close()
    await server.stop(0)


async def chat(
    gw: Gateway, request: ChatRequest, metadata: list[tuple[str, str]] = KEY
) -> list[ChatEvent]:
    return [e async for e in gw.stub.Chat(request, metadata=metadata, timeout=5)]


def kinds(events: list[ChatEvent]) -> list[str]:
    return [str(e.WhichOneof("event")) for e in events]


async def until(condition: object, timeout_s: float = 2.0) -> None:
    """Bounded polling for a condition set by the server side."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_turn_is_published_with_the_tenant_from_the_key_and_streamed_back(
    gateway: Gateway,
) -> None:
    call = gateway.stub.Chat(ChatRequest(message="hello", user_id="u"), metadata=KEY)
    events = [e async for e in call]
    assert kinds(events) == ["started", "delta", "delta", "done"]
    assert "".join(e.delta.text for e in events) == "Hi there"
    assert ("sb-idempotency", "new") in tuple(await call.initial_metadata())
    turn = gateway.publisher.turns[0]
    assert turn.tenant_id == "acme" and turn.reply_topic == REPLY_TOPIC
    assert turn.conversation_id == events[0].started.conversation_id
    assert turn.request_id == events[0].started.request_id and turn.accepted_at.seconds > 0
    assert not turn.HasField("deadline"), "no client deadline, none forwarded"
    assert gateway.locks.held == set() and gateway.publisher.cancels == []
    assert gateway.quotas.admitted == [("acme", "u")]
    assert gateway.requests.records[f"acme/{turn.request_id}"].state is RequestState.DONE


async def test_the_client_deadline_travels_with_the_turn(gateway: Gateway) -> None:
    _ = [e async for e in gateway.stub.Chat(ChatRequest(message="hello"), metadata=KEY, timeout=30)]
    turn = gateway.publisher.turns[0]
    remaining = turn.deadline.ToNanoseconds() - turn.accepted_at.ToNanoseconds()
    # gRPC rounds the timeout it sends up to a coarse unit: allow a little over.
    assert 25e9 < remaining <= 31e9


async def test_the_conversation_is_free_when_the_client_reads_done(gateway: Gateway) -> None:
    seen = []
    async for event in gateway.stub.Chat(
        ChatRequest(message="hello", conversation_id="c1"), metadata=KEY
    ):
        seen.append(event.WhichOneof("event"))
        if seen[-1] == "done":
            assert gateway.locks.held == set()
    assert seen[-1] == "done"


@pytest.mark.parametrize(
    ("metadata", "down"),
    [([], False), ([("authorization", "Bearer nope")], False), ([("authorization", "k")], False)],
)
async def test_missing_or_unknown_keys_are_unauthenticated(
    gateway: Gateway, metadata: list[tuple[str, str]], down: bool
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await chat(gateway, ChatRequest(message="hello"), metadata)
    assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert gateway.publisher.turns == [] and gateway.quotas.admitted == []


async def test_invalid_requests_are_refused_before_anything_is_charged(gateway: Gateway) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await chat(gateway, ChatRequest(message="  "))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "message" in (failure.value.details() or "")
    assert gateway.publisher.turns == [] and gateway.quotas.admitted == []
    assert gateway.requests.records == {}


async def test_a_replica_at_its_open_stream_limit_refuses_new_turns(gateway: Gateway) -> None:
    gateway.router.max_open_streams = 1
    gateway.router.open("globex", "held-open")  # another tenant's reply still streaming
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await chat(gateway, ChatRequest(message="hello", user_id="u", request_id="r-1"))
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "MAX_OPEN_STREAMS" in (failure.value.details() or "")
    assert gateway.publisher.turns == [] and gateway.requests.records == {}
    # Once that stream ends, the same request goes through.
    gateway.router.close("globex", "held-open")
    events = await chat(gateway, ChatRequest(message="hello", user_id="u", request_id="r-1"))
    assert kinds(events)[-1] == "done"


async def test_over_a_limit_is_resource_exhausted_with_the_retry_delay(gateway: Gateway) -> None:
    gateway.quotas.refusal = Refusal("user u is over the rate limit of 2 requests per minute", 29.5)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await chat(gateway, ChatRequest(message="hello", user_id="u", request_id="r-1"))
    error = failure.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "rate limit" in (error.details() or "")
    trailers = dict(error.trailing_metadata() or ())
    assert trailers["retry-after-ms"] == "29500"
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    retry_info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry_info)
    assert (retry_info.retry_delay.seconds, retry_info.retry_delay.nanos) == (29, 500_000_000)
    assert gateway.publisher.turns == []
    # The refused request id was not claimed: once admitted, the same id goes through.
    gateway.quotas.refusal = None
    events = await chat(gateway, ChatRequest(message="hello", user_id="u", request_id="r-1"))
    assert kinds(events)[-1] == "done"


async def test_a_second_request_while_generating_fails_precondition(gateway: Gateway) -> None:
    gateway.publisher.hold_reply = True
    first = gateway.stub.Chat(ChatRequest(message="one", conversation_id="c1"), metadata=KEY)
    assert (await first.read()).WhichOneof("event") == "started"
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await chat(gateway, ChatRequest(message="two", conversation_id="c1", request_id="r-2"))
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "c1" in (failure.value.details() or "")
    assert "acme/r-2" not in gateway.requests.records, "a refused request leaves no claim"
    assert len(gateway.publisher.turns) == 1
    first.cancel()


async def test_a_client_that_leaves_mid_reply_cancels_the_generation(gateway: Gateway) -> None:
    gateway.publisher.hold_reply = True
    call = gateway.stub.Chat(ChatRequest(message="one", conversation_id="c1"), metadata=KEY)
    started = await call.read()
    request_id = started.started.request_id
    call.cancel()
    await until(lambda: gateway.publisher.cancels and not gateway.locks.held)
    assert [c.request_id for c in gateway.publisher.cancels] == [request_id]
    await until(lambda: gateway.requests.records[f"acme/{request_id}"].state is RequestState.DONE)
    # A retry learns what happened instead of waiting for a reply that will never come.
    assert gateway.requests.events[f"acme/{request_id}"][-1].error.code == "CANCELLED"


async def test_silence_ends_the_stream_with_a_deadline_error_and_cancels(gateway: Gateway) -> None:
    gateway.publisher.hold_reply = True
    events = await chat(gateway, ChatRequest(message="one"))
    assert events[-1].error.code == "DEADLINE_EXCEEDED"
    assert gateway.locks.held == set()
    assert [c.request_id for c in gateway.publisher.cancels] == [events[0].started.request_id]


async def test_a_passed_client_deadline_is_deadline_exceeded_and_cancels(gateway: Gateway) -> None:
    gateway.publisher.hold_reply = True
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        _ = [
            e
            async for e in gateway.stub.Chat(ChatRequest(message="one"), metadata=KEY, timeout=0.2)
        ]
    assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await until(lambda: gateway.publisher.cancels and not gateway.locks.held)


@pytest.mark.parametrize("backend", ["kafka", "locks", "requests", "quotas", "mongo", "markers"])
async def test_an_unreachable_backend_is_unavailable(gateway: Gateway, backend: str) -> None:
    if backend == "markers":
        gateway.markers.down = True
    elif backend == "kafka":
        gateway.publisher.down = True
    elif backend == "locks":
        gateway.locks.down = True
    elif backend == "requests":
        gateway.requests.down = True
    elif backend == "quotas":
        gateway.quotas.down = True
    else:
        gateway.directory.down = True
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await chat(gateway, ChatRequest(message="hello", request_id="r-u"))
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert gateway.locks.held == set()
    assert "acme/r-u" not in gateway.requests.records, "an unaccepted request leaves no claim"


async def test_a_retry_while_the_first_runs_attaches_to_its_stream(gateway: Gateway) -> None:
    gateway.publisher.hold_reply = True
    request = ChatRequest(message="hello", user_id="u", request_id="r-attach")
    first = gateway.stub.Chat(request, metadata=KEY)
    assert (await first.read()).WhichOneof("event") == "started"
    retry = gateway.stub.Chat(request, metadata=KEY)
    assert (await retry.read()).WhichOneof("event") == "started"
    assert ("sb-idempotency", "attached") in tuple(await retry.initial_metadata())
    gateway.publisher.reply("r-attach")
    rest_first = [await first.read() for _ in range(3)]
    rest_retry = [await retry.read() for _ in range(3)]
    assert await first.read() is grpc.aio.EOF and await retry.read() is grpc.aio.EOF
    assert kinds(rest_first) == kinds(rest_retry) == ["delta", "delta", "done"]
    assert [e.sequence for e in rest_first] == [e.sequence for e in rest_retry]
    assert len(gateway.publisher.turns) == 1, "one generation for one request id"
    assert gateway.quotas.admitted == [("acme", "u")], "the retry is not charged"


async def test_a_retry_after_the_reply_finished_replays_it(gateway: Gateway) -> None:
    request = ChatRequest(message="hello", request_id="r-replay")
    first = await chat(gateway, request)
    call = gateway.stub.Chat(request, metadata=KEY)
    replayed = [e async for e in call]
    assert ("sb-idempotency", "replayed") in tuple(await call.initial_metadata())
    assert replayed == first
    assert len(gateway.publisher.turns) == 1


async def test_a_request_id_reused_for_another_request_is_refused(gateway: Gateway) -> None:
    await chat(gateway, ChatRequest(message="hello", request_id="r-used"))
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await chat(gateway, ChatRequest(message="something else", request_id="r-used"), KEY)
    assert failure.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "r-used" in (failure.value.details() or "")
    assert "hello" not in (failure.value.details() or ""), "nothing of the first leaks"
    assert len(gateway.publisher.turns) == 1


async def test_request_ids_are_scoped_by_tenant(gateway: Gateway) -> None:
    """Finding 5: another tenant using the same request id neither squats it (the first
    tenant's request is accepted), nor attaches to it, nor gets its events."""
    gateway.publisher.hold_reply = True
    theirs = gateway.stub.Chat(
        ChatRequest(message="squat", request_id="r-same"), metadata=OTHER_KEY
    )
    assert (await theirs.read()).started.request_id == "r-same"
    mine = gateway.stub.Chat(ChatRequest(message="hello", request_id="r-same"), metadata=KEY)
    assert (await mine.read()).started.request_id == "r-same"
    assert [t.tenant_id for t in gateway.publisher.turns] == ["globex", "acme"]
    gateway.publisher.reply("r-same", "acme")  # the events of acme's turn
    events = [await mine.read() for _ in range(3)]
    assert "".join(e.delta.text for e in events) == "Hi there"
    assert events[-1].HasField("done")
    theirs.cancel()
    await until(lambda: gateway.publisher.cancels)
    assert [(c.tenant_id, c.request_id) for c in gateway.publisher.cancels] == [
        ("globex", "r-same")
    ], "a cancellation names its tenant"


async def test_a_retry_of_a_request_whose_gateway_died_is_aborted(gateway: Gateway) -> None:
    request = ChatRequest(message="hello", request_id="r-orphan")
    gateway.requests.records["acme/r-orphan"] = RequestRecord(
        "acme", fingerprint(request), "chat.replies.dead", RequestState.RUNNING
    )
    gateway.dead_owners.add("chat.replies.dead")
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await chat(gateway, request)
    assert failure.value.code() == grpc.StatusCode.ABORTED
    assert "new request_id" in (failure.value.details() or "")
    assert gateway.publisher.turns == []


async def test_an_attached_retry_learns_when_the_owner_dies(gateway: Gateway) -> None:
    request = ChatRequest(message="hello", request_id="r-dies")
    gateway.requests.records["acme/r-dies"] = RequestRecord(
        "acme", fingerprint(request), "chat.replies.other", RequestState.RUNNING
    )
    call = gateway.stub.Chat(request, metadata=KEY)
    await call.initial_metadata()
    gateway.dead_owners.add("chat.replies.other")
    events = [e async for e in call]
    assert events[-1].error.code == "ABORTED"


async def test_shutdown_lets_open_streams_finish_within_the_grace(gateway: Gateway) -> None:
    gateway.publisher.hold_reply = True
    call = gateway.stub.Chat(ChatRequest(message="one"), metadata=KEY)
    started = await call.read()
    draining = asyncio.create_task(drain(gateway.server, gateway.router, grace_s=5))
    await asyncio.sleep(0.1)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await chat(gateway, ChatRequest(message="too late"))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    gateway.publisher.reply(started.started.request_id)
    assert kinds([await call.read() for _ in range(3)]) == ["delta", "delta", "done"]
    assert await asyncio.wait_for(draining, 5) is True


async def test_shutdown_cuts_off_streams_still_open_after_the_grace(gateway: Gateway) -> None:
    gateway.publisher.hold_reply = True
    call = gateway.stub.Chat(ChatRequest(message="one"), metadata=KEY)
    started = await call.read()
    assert await drain(gateway.server, gateway.router, grace_s=0.2) is False
    with pytest.raises(grpc.aio.AioRpcError):
        await call.read()
    await until(lambda: gateway.publisher.cancels)
    assert gateway.publisher.cancels[0].request_id == started.started.request_id


@pytest.mark.parametrize("gateway", [0.3], indirect=True)
async def test_with_a_grace_a_retry_after_a_disconnect_resumes_the_reply(gateway: Gateway) -> None:
    gateway.publisher.hold_reply = True
    request = ChatRequest(message="hello", request_id="r-resume")
    first = gateway.stub.Chat(request, metadata=KEY)
    await first.read()
    first.cancel()  # the connection dropped
    retry = gateway.stub.Chat(request, metadata=KEY)
    assert ("sb-idempotency", "attached") in tuple(await retry.initial_metadata())
    assert (await retry.read()).WhichOneof("event") == "started"
    # Past the 0.3 s grace, within the 1 s reply idle timeout: the attached retry keeps the
    # generation alive.
    await asyncio.sleep(0.45)
    assert gateway.publisher.cancels == []
    gateway.publisher.reply("r-resume")
    assert kinds([await retry.read() for _ in range(3)]) == ["delta", "delta", "done"]
    assert len(gateway.publisher.turns) == 1
    await until(lambda: not gateway.locks.held)
    await until(lambda: gateway.requests.follower_counts["acme/r-resume"] == 0)


@pytest.mark.parametrize("gateway", [0.3], indirect=True)
async def test_with_a_grace_a_disconnect_without_retry_cancels_after_it(gateway: Gateway) -> None:
    gateway.publisher.hold_reply = True
    call = gateway.stub.Chat(ChatRequest(message="hello", request_id="r-gone"), metadata=KEY)
    await call.read()
    call.cancel()
    await asyncio.sleep(0.1)
    assert gateway.publisher.cancels == [], "not before the grace"
    await until(lambda: gateway.publisher.cancels and not gateway.locks.held)
    assert gateway.requests.events["acme/r-gone"][-1].error.code == "CANCELLED"


@pytest.mark.parametrize("gateway", [5.0], indirect=True)
async def test_a_passed_deadline_cancels_at_once_even_with_a_grace(gateway: Gateway) -> None:
    gateway.publisher.hold_reply = True
    call = gateway.stub.Chat(ChatRequest(message="one"), metadata=KEY, timeout=0.2)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        _ = [e async for e in call]
    assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # Well before the 5 s grace: nobody retries a call whose deadline is over.
    await until(lambda: gateway.publisher.cancels, timeout_s=1.0)


async def test_conversation_methods_answer_unimplemented_for_now(gateway: Gateway) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await gateway.stub.GetConversation(
            GetConversationRequest(conversation_id="c"), metadata=KEY
        )
    assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED


# ---- conversations this tenant does not have ---------------------------------------------


@pytest.mark.parametrize("whose", ["made-up", "another tenant's"])
async def test_a_conversation_the_tenant_does_not_have_is_not_found(
    gateway: Gateway, whose: str
) -> None:
    conversation_id = "c-unknown"
    if whose == "another tenant's":
        gateway.markers.ids.add(("globex", conversation_id))
        gateway.memory.stored.add(("globex", conversation_id))
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await chat(
            gateway, ChatRequest(message="hi", conversation_id=conversation_id, request_id="r-n")
        )
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    # Worded the same whichever the reason, so nothing reveals that it exists elsewhere.
    assert failure.value.details() == (
        "conversation 'c-unknown' not found; send an empty conversation_id to start a new one"
    )
    assert gateway.publisher.turns == [] and gateway.quotas.admitted == []
    assert gateway.requests.records == {} and gateway.locks.held == set()
    assert ("acme", conversation_id) not in gateway.markers.ids


async def test_a_new_conversation_is_marked_before_its_turn_is_published(
    gateway: Gateway,
) -> None:
    marked_at_publish: list[bool] = []
    publish = gateway.publisher.publish_turn

    async def checking_publish(turn: TurnRequest) -> None:
        marked_at_publish.append((turn.tenant_id, turn.conversation_id) in gateway.markers.ids)
        await publish(turn)

    gateway.publisher.publish_turn = checking_publish  # type: ignore[method-assign]
    events = await chat(gateway, ChatRequest(message="hello"))
    conversation_id = events[0].started.conversation_id
    assert conversation_id and marked_at_publish == [True]
    # The next message on it is accepted without asking memory (it has not stored it yet).
    follow_up = await chat(gateway, ChatRequest(message="again", conversation_id=conversation_id))
    assert kinds(follow_up)[-1] == "done"
    assert follow_up[0].started.conversation_id == conversation_id
    assert gateway.memory.asked == []
    # Only the first turn tells the orchestrator that there is no history to read.
    assert [t.new_conversation for t in gateway.publisher.turns] == [True, False]


async def test_a_known_conversation_is_accepted(gateway: Gateway) -> None:
    events = await chat(gateway, ChatRequest(message="hello", conversation_id="c1"))
    assert kinds(events)[-1] == "done"
    assert gateway.publisher.turns[0].conversation_id == "c1"
    assert gateway.memory.asked == []


async def test_without_a_marker_memory_decides_and_the_marker_is_written_again(
    gateway: Gateway,
) -> None:
    gateway.memory.stored.add(("acme", "c-old"))
    events = await chat(gateway, ChatRequest(message="hello", conversation_id="c-old"))
    assert kinds(events)[-1] == "done"
    assert gateway.memory.asked == [("acme", "c-old")]
    assert ("acme", "c-old") in gateway.markers.ids
    await chat(gateway, ChatRequest(message="again", conversation_id="c-old"))
    assert gateway.memory.asked == [("acme", "c-old")], "the marker answers from now on"


@pytest.mark.parametrize(
    "failure", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED]
)
async def test_memory_unreachable_on_a_marker_miss_is_unavailable(
    gateway: Gateway, failure: grpc.StatusCode
) -> None:
    gateway.memory.failure = failure
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await chat(gateway, ChatRequest(message="hello", conversation_id="c-old"))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "conversation store is unavailable" in (refused.value.details() or "")
    assert gateway.publisher.turns == [] and gateway.quotas.admitted == []


async def test_a_retry_of_a_new_conversations_first_turn_replays_it(gateway: Gateway) -> None:
    request = ChatRequest(message="hello", request_id="r-first")
    first = await chat(gateway, request)
    again = await chat(gateway, request)
    assert again == first and len(gateway.publisher.turns) == 1


async def test_a_publish_of_unknown_outcome_asks_for_a_retry_with_the_same_request_id(
    gateway: Gateway,
) -> None:
    """Finding 7: a send whose acknowledgement did not come may still have landed. The client
    is told so and to retry with the same request id, which is accepted again (downstream
    is idempotent by request id); it used to hear that Kafka did not accept the message and
    retried with a new id, and the message was answered and stored twice."""
    gateway.publisher.acks_lost = 1
    request = ChatRequest(message="hello", request_id="r-unknown", conversation_id="c1")
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await chat(gateway, request)
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    details = failure.value.details() or ""
    assert "r-unknown may have been accepted" in details and "same request_id" in details
    assert not gateway.locks.held, "the conversation is free for the retry"

    events = await chat(gateway, request)
    assert kinds(events) == ["started", "delta", "delta", "done"]
    assert [t.request_id for t in gateway.publisher.turns] == ["r-unknown", "r-unknown"]


async def test_secrets_are_redacted_before_the_turn_is_published_or_fingerprinted(
    gateway: Gateway,
) -> None:
    message = "card 4111 1111 1111 1111 cvv 737, mail bob@example.com"
    request = ChatRequest(
        message=message,
        user_id="u",
        request_id="r-secret",
        options=ChatOptions(metadata={"note": "my password is Hunter2x"}),
    )
    _ = [e async for e in gateway.stub.Chat(request, metadata=KEY)]
    turn = gateway.publisher.turns[0]
    # The default tenant policy redacts personal data for the provider too.
    assert turn.message == "card [CARD] cvv [CARD], mail [EMAIL]"
    assert turn.options.metadata["note"] == "my password is [PASSWORD]"
    record = gateway.requests.records["acme/r-secret"]
    redacted = ChatRequest()
    redacted.CopyFrom(request)
    redacted.message = turn.message
    redacted.options.metadata["note"] = turn.options.metadata["note"]
    assert record.fingerprint == fingerprint(redacted) != fingerprint(request)
