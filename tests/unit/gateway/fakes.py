"""In-memory stand-ins for MongoDB, Redis and Kafka behind the gateway's ports."""

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace

import grpc
from aiohttp import web
from pymongo.errors import ServerSelectionTimeoutError

from switchboard.common.tenants import TenantConfig
from switchboard.gateway.admission import Admission, Admitted, Preflight
from switchboard.gateway.auth import TenantAuthenticator
from switchboard.gateway.browser import BrowserSessions
from switchboard.gateway.core import ChatCore
from switchboard.gateway.directory import (
    ConversationDirectory,
    DirectoryUnavailableError,
    MemoryBackedDirectory,
)
from switchboard.gateway.http_edge import HttpEdge
from switchboard.gateway.http_stream import StreamOptions
from switchboard.gateway.idempotency import (
    OwnerGoneError,
    RequestRecord,
    RequestState,
    RequestStore,
    RequestStoreUnavailableError,
    RequestVanishedError,
)
from switchboard.gateway.ports import ConversationLocks
from switchboard.gateway.quotas import Quotas, QuotaUnavailableError, Refusal
from switchboard.gateway.replies import ReplyRouter, ReplyTimeoutError, is_terminal
from switchboard.gateway.service import (
    BackendUnavailableError,
    HeldLock,
    PublishOutcomeUnknownError,
)
from switchboard.gateway.validation import ChatLimits
from switchboard.v1.chat_pb2 import ChatEvent, Delta, Done
from switchboard.v1.events_pb2 import CancelGeneration, TurnRequest
from switchboard.v1.memory_pb2 import MemoryGetConversationRequest


class SequentialAdmission(Admission):
    """Admission through the separate ports, one call each: the fakes below plug into it
    (production admits through `RedisAdmission`, two round trips)."""

    def __init__(
        self,
        quotas: Quotas,
        requests: RequestStore,
        locks: ConversationLocks,
        directory: ConversationDirectory,
    ) -> None:
        self._quotas = quotas
        self._requests = requests
        self._locks = locks
        self._directory = directory

    async def preflight(
        self, tenant: TenantConfig, request_key: str | None, conversation_id: str
    ) -> Preflight:
        existing = await self._requests.get(request_key) if request_key else None
        return Preflight(existing=existing)

    async def admit(
        self,
        tenant: TenantConfig,
        user_id: str,
        request_key: str,
        record: RequestRecord,
        conversation_id: str,
        request_id: str,
        new_conversation: bool,
    ) -> Admitted:
        refusal = await self._quotas.admit(tenant, user_id)
        if refusal is not None:
            return Admitted(refusal=refusal)
        existing = await self._requests.claim(request_key, record)
        if existing is not None:
            return Admitted(existing=existing)
        lock: HeldLock | None = None
        try:
            lock = await self._locks.acquire(tenant.tenant_id, conversation_id, request_id)
            if lock is not None and new_conversation:
                await self._directory.add(tenant.tenant_id, conversation_id)
        except BaseException:
            if lock is not None:
                await lock.release()
            await self._requests.release(request_key)
            raise
        if lock is None:
            await self._requests.release(request_key)
        return Admitted(lock=lock)


class FakeDirectory:
    def __init__(self, tenants: dict[str, TenantConfig]) -> None:
        self.tenants = tenants
        self.down = False

    async def by_api_key(self, api_key: str) -> TenantConfig | None:
        if self.down:
            raise ServerSelectionTimeoutError("no MongoDB")
        return self.tenants.get(api_key)


@dataclass
class FakeQuotas:
    refusal: Refusal | None = None
    down: bool = False
    admitted: list[tuple[str, str]] = field(default_factory=list)

    async def admit(self, tenant: TenantConfig, user_id: str) -> Refusal | None:
        if self.down:
            raise QuotaUnavailableError("Redis is unreachable")
        if self.refusal is None:
            self.admitted.append((tenant.tenant_id, user_id))
        return self.refusal


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


class FakeConversationMarkers:
    """The Redis markers of the conversation directory, as a set of (tenant, conversation)."""

    def __init__(self, *known: tuple[str, str]) -> None:
        self.ids: set[tuple[str, str]] = set(known)
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise DirectoryUnavailableError("Redis is unreachable")

    async def known(self, tenant_id: str, conversation_id: str) -> bool:
        self._check()
        return (tenant_id, conversation_id) in self.ids

    async def add(self, tenant_id: str, conversation_id: str) -> None:
        self._check()
        self.ids.add((tenant_id, conversation_id))

    async def remove(self, tenant_id: str, conversation_id: str) -> None:
        self._check()
        self.ids.discard((tenant_id, conversation_id))


class FakeConversationReader:
    """The memory service's GetConversation over a set; fails like the gRPC stub does."""

    def __init__(self) -> None:
        self.stored: set[tuple[str, str]] = set()
        self.failure: grpc.StatusCode | None = None
        self.asked: list[tuple[str, str]] = []

    async def GetConversation(
        self,
        request: MemoryGetConversationRequest,
        *,
        timeout: float,  # noqa: ASYNC109 (the gRPC stub's signature)
    ) -> object:
        key = (request.tenant_id, request.conversation_id)
        self.asked.append(key)
        if self.failure is not None:
            raise grpc.aio.AioRpcError(self.failure, details="memory says no")
        if key not in self.stored:
            raise grpc.aio.AioRpcError(grpc.StatusCode.NOT_FOUND, details="not found")
        return object()


class MemoryRecorder:
    def __init__(self, store: "MemoryRequestStore", request_id: str) -> None:
        self.store, self.request_id = store, request_id

    def add(self, event: ChatEvent) -> None:
        self.store.events.setdefault(self.request_id, []).append(event)
        self.store.changed.set()

    async def finish(self) -> None:
        record = self.store.records.get(self.request_id)
        if record is not None:
            self.store.records[self.request_id] = replace(record, state=RequestState.DONE)
        self.store.changed.set()


class MemoryRequestStore:
    """The RedisRequestStore's contract over dicts; `follow` polls like the real one."""

    def __init__(self) -> None:
        self.records: dict[str, RequestRecord] = {}
        self.events: dict[str, list[ChatEvent]] = {}
        self.changed = asyncio.Event()
        self.follower_counts: dict[str, int] = {}
        self.down = False

    async def get(self, request_id: str) -> RequestRecord | None:
        if self.down:
            raise RequestStoreUnavailableError("Redis is unreachable")
        return self.records.get(request_id)

    async def claim(self, request_id: str, record: RequestRecord) -> RequestRecord | None:
        if self.down:
            raise RequestStoreUnavailableError("Redis is unreachable")
        if request_id in self.records:
            return self.records[request_id]
        self.records[request_id] = record
        return None

    async def release(self, request_id: str) -> None:
        self.records.pop(request_id, None)
        self.events.pop(request_id, None)

    def recorder(self, request_id: str, record: RequestRecord) -> MemoryRecorder:
        return MemoryRecorder(self, request_id)

    async def follower_joined(self, request_id: str) -> None:
        self.follower_counts[request_id] = self.follower_counts.get(request_id, 0) + 1

    async def follower_left(self, request_id: str) -> None:
        self.follower_counts[request_id] -= 1

    async def followers(self, request_id: str) -> int:
        return self.follower_counts.get(request_id, 0)

    async def follow(
        self,
        request_id: str,
        idle_timeout_s: float,
        owner_alive: Callable[[str], Awaitable[bool]],
    ) -> AsyncIterator[ChatEvent]:
        seen = 0
        loop = asyncio.get_running_loop()
        idle_deadline = loop.time() + idle_timeout_s
        while True:
            events = self.events.get(request_id, [])
            for event in events[seen:]:
                seen += 1
                yield event
                if is_terminal(event):
                    return
            record = self.records.get(request_id)
            if record is None:
                raise RequestVanishedError(request_id)
            if record.state is RequestState.RUNNING and not await owner_alive(record.owner):
                raise OwnerGoneError(record.owner)
            if loop.time() >= idle_deadline:
                raise ReplyTimeoutError(request_id)
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), 0.02)
            except TimeoutError:
                pass
            else:
                idle_deadline = loop.time() + idle_timeout_s


class ScriptedPublisher:
    """Answers each published turn with scripted reply events through the router."""

    def __init__(self, router: ReplyRouter) -> None:
        self.router = router
        self.turns: list[TurnRequest] = []
        self.cancels: list[CancelGeneration] = []
        self.down = False
        self.hold_reply = False
        # The next publishes land but their acknowledgement is lost.
        self.acks_lost = 0

    async def publish_turn(self, turn: TurnRequest) -> None:
        if self.down:
            raise BackendUnavailableError("Kafka did not accept the message")
        self.turns.append(turn)
        if self.acks_lost:
            self.acks_lost -= 1
            raise PublishOutcomeUnknownError("Kafka did not acknowledge it within 10s")
        if not self.hold_reply:
            asyncio.get_running_loop().call_soon(self.reply, turn.request_id, turn.tenant_id)

    def reply(self, rid: str, tenant_id: str = "acme") -> None:
        deliver = functools.partial(self.router.deliver, tenant_id)
        deliver(ChatEvent(request_id=rid, sequence=1, delta=Delta(text="Hi")))
        deliver(ChatEvent(request_id=rid, sequence=1, delta=Delta(text="Hi")))  # dup
        deliver(ChatEvent(request_id=rid, sequence=2, delta=Delta(text=" there")))
        deliver(ChatEvent(request_id=rid, sequence=3, done=Done(model="m", tier="cheap")))

    async def publish_cancel(self, cancel: CancelGeneration) -> None:
        self.cancels.append(cancel)


class ScriptPublisher(ScriptedPublisher):
    """Answers each turn with `script` (numbered from 1), or holds it for `deliver`."""

    def __init__(self, router: ReplyRouter, script: list[ChatEvent] | None = None) -> None:
        super().__init__(router)
        self.script = list(script or ())

    def reply(self, rid: str, tenant_id: str = "acme") -> None:
        self.deliver(rid, self.script, tenant_id)

    def deliver(
        self, rid: str, events: list[ChatEvent], tenant_id: str = "acme", start: int = 1
    ) -> None:
        for sequence, event in enumerate(events, start=start):
            copy = ChatEvent()
            copy.CopyFrom(event)
            copy.request_id, copy.sequence = rid, sequence
            self.router.deliver(tenant_id, copy)


class NoPublishableKeys:
    async def by_publishable_key(self, key: str) -> TenantConfig | None:
        return None


async def _alive(_: str) -> bool:
    return True


def http_edge_app(
    router: ReplyRouter,
    publisher: ScriptedPublisher,
    quotas: FakeQuotas,
    stream_options: StreamOptions | None = None,
) -> web.Application:
    """The HTTP door over the real ChatCore, with these fakes behind it (tenant acme, key k)."""
    requests = MemoryRequestStore()
    directory = MemoryBackedDirectory(
        FakeConversationMarkers(), FakeConversationReader(), timeout_s=1.0
    )
    core = ChatCore(
        authenticator=TenantAuthenticator(FakeDirectory({"k": TenantConfig(tenant_id="acme")})),
        limits=ChatLimits(100, 10, 4, 1000),
        admission=SequentialAdmission(quotas, requests, FakeLocks(), directory),
        requests=requests,
        owner_alive=_alive,
        publisher=publisher,
        conversation_directory=directory,
        router=router,
        reply_topic="chat.replies.test",
        reply_idle_timeout_s=2.0,
    )
    return HttpEdge(
        core=core,
        conversations=None,
        publishable_keys=NoPublishableKeys(),
        sessions=BrowserSessions(None, 60),  # type: ignore[arg-type]  # no browser calls here
        max_body_bytes=4096,
        stream_options=stream_options,
    ).app()
