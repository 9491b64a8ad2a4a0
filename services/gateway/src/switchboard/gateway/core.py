"""The door-independent turn pipeline: authenticate, validate, admit, publish, relay.

Both doors, the gRPC `ChatService` (service.py) and the HTTP edge (http_edge.py), are thin
adapters over `ChatCore`: a refusal is a `Refused` carrying a gRPC status code, which each door
renders in its own shape (a gRPC status with trailers, or an OpenAI-shaped HTTP error).

The order of the checks is the contract (README, "Gateway API"): UNAUTHENTICATED, then
INVALID_ARGUMENT, then a known request id is attached or replayed (it is not charged again),
then NOT_FOUND (a conversation_id this tenant does not have), then RESOURCE_EXHAUSTED (budget,
rate limits), then FAILED_PRECONDITION (the conversation is generating). Nothing reaches Kafka
before all of them passed.
"""

import math
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from typing import NoReturn, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import trace

from switchboard.common.tenants import TenantConfig
from switchboard.gateway.admission import Admission
from switchboard.gateway.auth import TenantAuthenticator, TenantLookupError
from switchboard.gateway.directory import ConversationDirectory, DirectoryUnavailableError
from switchboard.gateway.idempotency import (
    RequestRecord,
    RequestState,
    RequestStore,
    RequestStoreUnavailableError,
    Retries,
    fingerprint,
    request_key,
)
from switchboard.gateway.metrics import CHATS
from switchboard.gateway.ports import (
    BackendUnavailableError,
    ConversationLocks,
    HeldLock,
    OnAdmitted,
    PublishOutcomeUnknownError,
    TimeRemaining,
    TurnPublisher,
)
from switchboard.gateway.quotas import QuotaUnavailableError, Refusal
from switchboard.gateway.redaction import RequestRedactor
from switchboard.gateway.refusals import Refused, error_event
from switchboard.gateway.relay import ReplyRelay
from switchboard.gateway.replies import ReplyRouter, ReplyStream
from switchboard.gateway.validation import ChatLimits, chat_request_problem
from switchboard.v1.chat_pb2 import ChatEvent, ChatRequest
from switchboard.v1.events_pb2 import TurnRequest

tracer = trace.get_tracer("switchboard.gateway")
T = TypeVar("T")

__all__ = [
    "BackendUnavailableError",
    "ChatCore",
    "ConversationLocks",
    "HeldLock",
    "OnAdmitted",
    "PublishOutcomeUnknownError",
    "Refused",
    "TimeRemaining",
    "TurnPublisher",
    "error_event",
]


def _outcome_unknown(request_id: str, exc: PublishOutcomeUnknownError) -> str:
    return (
        f"request {request_id} may have been accepted ({exc}); retry with the same "
        "request_id: it is attached to the reply if the message arrived, and sent again if "
        "not. A new request_id could answer (and store) the message twice"
    )


async def _no_admission_hook(_: str) -> None:
    return None


def _no_deadline() -> float | None:
    return None


class ChatCore:
    """Admits one message per call and yields its reply events, whichever door it came by."""

    def __init__(
        self,
        *,
        authenticator: TenantAuthenticator,
        limits: ChatLimits,
        admission: Admission,
        requests: RequestStore,
        owner_alive: Callable[[str], Awaitable[bool]],
        publisher: TurnPublisher,
        conversation_directory: ConversationDirectory,
        router: ReplyRouter,
        reply_topic: str,
        reply_idle_timeout_s: float,
        disconnect_grace_s: float = 0.0,
    ) -> None:
        self._authenticator = authenticator
        self.limits = limits
        self._requests = requests
        self._publisher = publisher
        self.directory = conversation_directory
        # The checks before the publish (Redis in production: two round trips, admission.py).
        self._admission = admission
        self._router = router
        self._reply_topic = reply_topic
        self.redaction = RequestRedactor()
        self._retries = Retries(requests, owner_alive, reply_idle_timeout_s)
        self._relay = ReplyRelay(
            router=router,
            requests=requests,
            publisher=publisher,
            reply_idle_timeout_s=reply_idle_timeout_s,
            disconnect_grace_s=disconnect_grace_s,
        )

    async def authenticate(self, metadata: Iterable[tuple[str, str | bytes]]) -> TenantConfig:
        """The caller's tenant from `authorization: Bearer <key>`; Refused otherwise."""
        try:
            tenant = await self._authenticator.tenant_for(metadata)
        except TenantLookupError as exc:
            CHATS.labels("unavailable").inc()
            raise Refused(grpc.StatusCode.UNAVAILABLE, str(exc)) from exc
        if tenant is None:
            CHATS.labels("unauthenticated").inc()
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, "missing or unknown API key")
        return tenant

    async def chat(
        self,
        tenant: TenantConfig,
        request: ChatRequest,
        *,
        time_remaining: TimeRemaining = _no_deadline,
        on_admitted: OnAdmitted = _no_admission_hook,
    ) -> AsyncGenerator[ChatEvent, None]:
        """Admit `request` for `tenant` and yield its reply, `started` to `done` or `error`.

        Refusals before the first event raise `Refused`; so does a reader too slow for its
        buffer (RESOURCE_EXHAUSTED) mid-reply. Close the iterator (`aclosing`) when the caller
        leaves: an unfinished reply is then cancelled (or kept for a retry, see
        `disconnect_grace_s`)."""
        problem = chat_request_problem(request, self.limits)
        if problem is not None:
            CHATS.labels("invalid").inc()
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, problem)
        request_id = request.request_id or str(uuid.uuid4())
        tenant_id = tenant.tenant_id
        # The request store's id: scoped by tenant (request ids are chosen by clients).
        key = request_key(tenant_id, request_id)
        # From here on only the redacted request exists: it is what is fingerprinted,
        # recorded and published, so no secret comes to rest anywhere.
        raw_user_id = request.user_id
        request = self.redaction.chat_request(request, tenant)
        request_print = fingerprint(request)

        # The span is made current only around the steps that do not yield: a generator
        # may be resumed (or closed) from another context, where detaching would fail.
        span = tracer.start_span(
            "chat",
            kind=trace.SpanKind.SERVER,
            attributes={
                "switchboard.request_id": request_id,
                "switchboard.tenant_id": tenant.tenant_id,
            },
        )
        try:
            # The reads first, in one round trip (admission.py).
            preflight = await self._unavailable_on_error(
                self._admission.preflight(
                    tenant, key if request.request_id else None, request.conversation_id
                )
            )
            if preflight.existing is not None:
                async for event in self._retries.follow(
                    request_id, preflight.existing, tenant, request_print, on_admitted
                ):
                    yield event
                return

            if request.conversation_id and not preflight.marked:
                # No marker (or not read): the directory decides, memory behind it.
                await self.require_conversation(tenant, request.conversation_id)

            if preflight.refusal is not None:
                self._exhausted(preflight.refusal)
            if self._router.full:
                # Both doors: gRPC's max_concurrent_rpcs does not bound the HTTP edge's streams.
                CHATS.labels("exhausted").inc()
                raise Refused(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"this gateway replica has {self._router.open_streams} open streams, its "
                    "limit (SWITCHBOARD_GATEWAY_MAX_OPEN_STREAMS); retry shortly",
                )

            new_conversation = not request.conversation_id
            conversation_id = request.conversation_id or str(uuid.uuid4())
            record = RequestRecord(
                tenant.tenant_id, request_print, self._reply_topic, RequestState.RUNNING
            )
            # The writes, together: charge, claim, lock, mark; all undone on a refusal.
            admitted = await self._unavailable_on_error(
                self._admission.admit(
                    tenant,
                    raw_user_id,
                    key,
                    record,
                    conversation_id,
                    request_id,
                    new_conversation,
                )
            )
            if admitted.refusal is not None:
                self._exhausted(admitted.refusal)
            if admitted.existing is not None:  # a concurrent call with the same id won
                async for event in self._retries.follow(
                    request_id, admitted.existing, tenant, request_print, on_admitted
                ):
                    yield event
                return
            if admitted.lock is None:
                CHATS.labels("busy").inc()
                raise Refused(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"conversation {conversation_id} is still generating a reply; "
                    "wait for its done or error event",
                )

            with trace.use_span(span, end_on_exit=False):
                stream = await self._accept(
                    tenant,
                    conversation_id,
                    request_id,
                    request,
                    admitted.lock,
                    time_remaining,
                    new_conversation=new_conversation,
                )
            lock = admitted.lock
            async for event in self._relay.run(
                conversation_id,
                request_id,
                stream,
                lock,
                self._requests.recorder(key, record),
                tenant_id,
                time_remaining,
                on_admitted,
            ):
                yield event
        finally:
            span.end()

    async def require_conversation(self, tenant: TenantConfig, conversation_id: str) -> None:
        """NOT_FOUND unless the tenant has the conversation: worded the same whether it is
        another tenant's, deleted or never existed, so nothing reveals that it exists."""
        known = await self._unavailable_on_error(
            self.directory.known(tenant.tenant_id, conversation_id)
        )
        if not known:
            CHATS.labels("not_found").inc()
            raise Refused(
                grpc.StatusCode.NOT_FOUND,
                f"conversation {conversation_id!r} not found; "
                "send an empty conversation_id to start a new one",
            )

    async def _unavailable_on_error(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except (
            BackendUnavailableError,
            DirectoryUnavailableError,
            QuotaUnavailableError,
            RequestStoreUnavailableError,
        ) as exc:
            CHATS.labels("unavailable").inc()
            raise Refused(grpc.StatusCode.UNAVAILABLE, str(exc)) from exc

    def _exhausted(self, refusal: Refusal) -> NoReturn:
        CHATS.labels("exhausted").inc()
        raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal.message, refusal)

    async def _accept(
        self,
        tenant: TenantConfig,
        conversation_id: str,
        request_id: str,
        request: ChatRequest,
        lock: HeldLock,
        time_remaining: TimeRemaining,
        *,
        new_conversation: bool,
    ) -> ReplyStream:
        """Publish the admitted turn; on any failure, free the lock and forget the claim."""
        stream: ReplyStream | None = None
        try:
            accepted_at = Timestamp()
            accepted_at.GetCurrentTime()
            turn = TurnRequest(
                tenant_id=tenant.tenant_id,
                conversation_id=conversation_id,
                request_id=request_id,
                user_id=request.user_id,
                message=request.message,
                options=request.options,
                reply_topic=self._reply_topic,
                accepted_at=accepted_at,
                new_conversation=new_conversation,
            )
            remaining = time_remaining()
            if remaining is not None and math.isfinite(remaining):
                turn.deadline.FromNanoseconds(accepted_at.ToNanoseconds() + int(remaining * 1e9))
            # Registered before publishing so that no early reply finds the stream missing.
            stream = self._router.open(tenant.tenant_id, request_id)
            try:
                await self._publisher.publish_turn(turn)
            except PublishOutcomeUnknownError as exc:
                # The claim is released below, so the retry we ask for publishes again.
                CHATS.labels("accepted_unknown").inc()
                raise Refused(
                    grpc.StatusCode.UNAVAILABLE, _outcome_unknown(request_id, exc)
                ) from exc
            except BackendUnavailableError as exc:
                CHATS.labels("unavailable").inc()
                raise Refused(grpc.StatusCode.UNAVAILABLE, str(exc)) from exc
            return stream
        except BaseException:
            if stream is not None:
                self._router.close(tenant.tenant_id, request_id)
            await lock.release()
            await self._requests.release(request_key(tenant.tenant_id, request_id))
            raise

    async def close(self) -> None:
        """Cancel the replies kept for retries (at shutdown, while Kafka is still up)."""
        await self._relay.close()
