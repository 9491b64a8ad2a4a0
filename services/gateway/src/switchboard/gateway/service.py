"""`switchboard.v1.ChatService` over gRPC: authenticate, validate, admit, publish, relay.

The order of the checks is the contract (README, "Gateway API"): UNAUTHENTICATED, then
INVALID_ARGUMENT, then a known request id is attached or replayed (it is not charged again),
then NOT_FOUND (a conversation_id this tenant does not have), then RESOURCE_EXHAUSTED (budget,
rate limits), then FAILED_PRECONDITION (the conversation is generating). Nothing reaches Kafka
before all of them passed.
"""

import asyncio
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, Protocol, TypeAlias, TypeVar

import grpc
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from opentelemetry import trace
from prometheus_client import Counter, Histogram

from switchboard.common.tenants import TenantConfig
from switchboard.gateway.auth import TenantAuthenticator, TenantLookupError
from switchboard.gateway.conversations import ConversationMethods
from switchboard.gateway.directory import ConversationDirectory, DirectoryUnavailableError
from switchboard.gateway.quotas import Quotas, QuotaUnavailableError, Refusal, retry_after_ms
from switchboard.gateway.redaction import RequestRedactor
from switchboard.gateway.replies import (
    ReplyRouter,
    ReplyStream,
    ReplyTimeoutError,
    StreamOverflowError,
    is_terminal,
)
from switchboard.gateway.requests import (
    OwnerGoneError,
    Recorder,
    RequestRecord,
    RequestState,
    RequestStore,
    RequestStoreUnavailableError,
    RequestVanishedError,
    fingerprint,
    request_key,
)
from switchboard.gateway.validation import ChatLimits, chat_request_problem
from switchboard.v1 import chat_pb2_grpc
from switchboard.v1.chat_pb2 import (
    ChatEvent,
    ChatRequest,
    Conversation,
    DeleteConversationRequest,
    DeleteConversationResponse,
    Error,
    GetConversationRequest,
    ListConversationsRequest,
    ListConversationsResponse,
    Started,
    SubmitFeedbackRequest,
    SubmitFeedbackResponse,
)
from switchboard.v1.events_pb2 import CancelGeneration, TurnRequest

log = logging.getLogger(__name__)
tracer = trace.get_tracer("switchboard.gateway")

TIME_TO_FIRST_TOKEN = Histogram(
    "switchboard_gateway_time_to_first_token_seconds",
    "From a turn's acceptance to its first text relayed to the client",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
OUTPUT_TOKENS = Counter(
    "switchboard_gateway_output_tokens", "Generated tokens relayed to clients (rate = tokens/s)"
)
STREAM_TOKENS_PER_SECOND = Histogram(
    "switchboard_gateway_stream_tokens_per_second",
    "Per reply: output tokens over the time from its first text to done",
    buckets=(5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
)


def record_tokens(output_tokens: int, first_text_at: float | None) -> None:
    """Account the tokens of a finished reply."""
    OUTPUT_TOKENS.inc(output_tokens)
    if first_text_at is not None and output_tokens:
        elapsed = time.monotonic() - first_text_at
        if elapsed > 0:
            STREAM_TOKENS_PER_SECOND.observe(output_tokens / elapsed)


CHATS = Counter("switchboard_gateway_chats", "Chat calls by outcome", ["outcome"])

# Response headers of Chat (initial metadata).
IDEMPOTENCY_HEADER = "sb-idempotency"  # "new", "attached" or "replayed"
# Trailers of RESOURCE_EXHAUSTED: the delay in milliseconds, and the same as a
# google.rpc.RetryInfo in the standard rich-status trailer.
RETRY_AFTER_TRAILER = "retry-after-ms"
STATUS_DETAILS_TRAILER = "grpc-status-details-bin"

ChatContext: TypeAlias = grpc.aio.ServicerContext[ChatRequest, ChatEvent]
T = TypeVar("T")


class TurnPublisher(Protocol):
    """Where accepted turns and cancellations go (Kafka in production)."""

    async def publish_turn(self, turn: TurnRequest) -> None: ...

    async def publish_cancel(self, cancel: CancelGeneration) -> None: ...


class HeldLock(Protocol):
    """A conversation lock held by one request."""

    async def release(self) -> None:
        """Free the conversation; releasing twice is harmless."""
        ...


class ConversationLocks(Protocol):
    """One generation per conversation at a time (Redis in production)."""

    async def acquire(
        self, tenant_id: str, conversation_id: str, request_id: str
    ) -> HeldLock | None: ...


class BackendUnavailableError(Exception):
    """Kafka or Redis could not be reached in time."""


class PublishOutcomeUnknownError(BackendUnavailableError):
    """A turn was handed to Kafka but its acknowledgement did not come in time: it may or
    may not have been stored. A retry with the same request id is safe either way (the
    orchestrator and memory are idempotent by request id); one with a new id is not."""


def _outcome_unknown(request_id: str, exc: PublishOutcomeUnknownError) -> str:
    return (
        f"request {request_id} may have been accepted ({exc}); retry with the same "
        "request_id: it is attached to the reply if the message arrived, and sent again if "
        "not. A new request_id could answer (and store) the message twice"
    )


def _error_event(request_id: str, sequence: int, code: str, message: str) -> ChatEvent:
    return ChatEvent(
        request_id=request_id, sequence=sequence, error=Error(code=code, message=message)
    )


async def _abort(
    context: ChatContext,
    code: grpc.StatusCode,
    details: str,
    trailing_metadata: tuple[tuple[str, str | bytes], ...] = (),
) -> NoReturn:
    """End the call with a status; `context.abort` raises, this says so to the type checker."""
    await context.abort(code, details, trailing_metadata=trailing_metadata)
    raise AssertionError("context.abort returned")


def _deadline_passed(context: ChatContext) -> bool:
    remaining = context.time_remaining()
    return remaining is not None and remaining <= 0


def _owner_gone(request_id: str) -> str:
    return (
        f"the gateway that accepted request {request_id} stopped before its reply finished; "
        "the reply cannot be resumed. Read the conversation to see whether the turn was "
        "stored, or send the message again with a new request_id"
    )


def resource_exhausted_trailers(refusal: Refusal) -> tuple[tuple[str, str | bytes], ...]:
    """`retry-after-ms` and a google.rpc.Status carrying a RetryInfo."""
    delay_ms = retry_after_ms(refusal)
    retry_info = AnyProto()
    retry_info.Pack(
        error_details_pb2.RetryInfo(
            retry_delay=Duration(seconds=delay_ms // 1000, nanos=(delay_ms % 1000) * 1_000_000)
        )
    )
    status = status_pb2.Status(
        code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
        message=refusal.message,
        details=[retry_info],
    )
    return (
        (RETRY_AFTER_TRAILER, str(delay_ms)),
        (STATUS_DETAILS_TRAILER, status.SerializeToString()),
    )


class ChatService(chat_pb2_grpc.ChatServiceServicer):
    """Accepts one message per call and streams its reply back."""

    def __init__(
        self,
        *,
        authenticator: TenantAuthenticator,
        limits: ChatLimits,
        quotas: Quotas,
        requests: RequestStore,
        owner_alive: Callable[[str], Awaitable[bool]],
        publisher: TurnPublisher,
        locks: ConversationLocks,
        conversation_directory: ConversationDirectory,
        router: ReplyRouter,
        reply_topic: str,
        reply_idle_timeout_s: float,
        conversations: ConversationMethods | None = None,
        disconnect_grace_s: float = 0.0,
    ) -> None:
        self._authenticator = authenticator
        self._limits = limits
        self._quotas = quotas
        self._requests = requests
        self._owner_alive = owner_alive
        self._publisher = publisher
        self._locks = locks
        self._directory = conversation_directory
        self._router = router
        self._reply_topic = reply_topic
        self._reply_idle_timeout_s = reply_idle_timeout_s
        self._conversations = conversations
        self._disconnect_grace_s = disconnect_grace_s
        self._redaction = RequestRedactor()
        # Replies kept going for a retry after their caller left (see _keep_for_retry).
        self._orphans: set[asyncio.Task[None]] = set()

    async def Chat(self, request: ChatRequest, context: ChatContext) -> AsyncIterator[ChatEvent]:
        tenant = await self._authenticate(context)
        problem = chat_request_problem(request, self._limits)
        if problem is not None:
            CHATS.labels("invalid").inc()
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, problem)
        request_id = request.request_id or str(uuid.uuid4())
        tenant_id = tenant.tenant_id
        # The request store's id: scoped by tenant (request ids are chosen by clients).
        key = request_key(tenant_id, request_id)
        # From here on only the redacted request exists: it is what is fingerprinted,
        # recorded and published, so no secret comes to rest anywhere.
        raw_user_id = request.user_id
        request = self._redaction.chat_request(request, tenant)
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
            if request.request_id:
                existing = await self._unavailable_on_error(context, self._requests.get(key))
                if existing is not None:
                    async for event in self._follow(
                        context, request_id, existing, tenant, request_print
                    ):
                        yield event
                    return

            if request.conversation_id:
                await self._require_conversation(context, tenant, request.conversation_id)

            refusal = await self._unavailable_on_error(
                context, self._quotas.admit(tenant, raw_user_id)
            )
            if refusal is not None:
                CHATS.labels("exhausted").inc()
                await _abort(
                    context,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    refusal.message,
                    trailing_metadata=resource_exhausted_trailers(refusal),
                )

            record = RequestRecord(
                tenant.tenant_id, request_print, self._reply_topic, RequestState.RUNNING
            )
            existing = await self._unavailable_on_error(context, self._requests.claim(key, record))
            if existing is not None:  # a concurrent call with the same id won the claim
                async for event in self._follow(
                    context, request_id, existing, tenant, request_print
                ):
                    yield event
                return

            new_conversation = not request.conversation_id
            conversation_id = request.conversation_id or str(uuid.uuid4())
            with trace.use_span(span, end_on_exit=False):
                lock, stream = await self._accept(
                    context, tenant, conversation_id, request_id, request, new_conversation
                )
            async for event in self._relay(
                context,
                conversation_id,
                request_id,
                stream,
                lock,
                self._requests.recorder(key, record),
                tenant_id,
            ):
                yield event
        finally:
            span.end()

    async def _authenticate(self, context: ChatContext) -> TenantConfig:
        try:
            tenant = await self._authenticator.tenant_for(context.invocation_metadata() or ())
        except TenantLookupError as exc:
            CHATS.labels("unavailable").inc()
            await _abort(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        if tenant is None:
            CHATS.labels("unauthenticated").inc()
            await _abort(context, grpc.StatusCode.UNAUTHENTICATED, "missing or unknown API key")
        return tenant

    async def _require_conversation(
        self, context: ChatContext, tenant: TenantConfig, conversation_id: str
    ) -> None:
        """NOT_FOUND unless the tenant has the conversation: worded the same whether it is
        another tenant's, deleted or never existed, so nothing reveals that it exists."""
        known = await self._unavailable_on_error(
            context, self._directory.known(tenant.tenant_id, conversation_id)
        )
        if not known:
            CHATS.labels("not_found").inc()
            await _abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"conversation {conversation_id!r} not found; "
                "send an empty conversation_id to start a new one",
            )

    async def _unavailable_on_error(self, context: ChatContext, call: Awaitable[T]) -> T:
        try:
            return await call
        except (
            BackendUnavailableError,
            DirectoryUnavailableError,
            QuotaUnavailableError,
            RequestStoreUnavailableError,
        ) as exc:
            CHATS.labels("unavailable").inc()
            await _abort(context, grpc.StatusCode.UNAVAILABLE, str(exc))

    async def _accept(
        self,
        context: ChatContext,
        tenant: TenantConfig,
        conversation_id: str,
        request_id: str,
        request: ChatRequest,
        new_conversation: bool,
    ) -> tuple[HeldLock, ReplyStream]:
        """Lock the conversation and publish the turn; on any refusal, forget the claim."""
        lock: HeldLock | None = None
        stream: ReplyStream | None = None
        try:
            lock = await self._unavailable_on_error(
                context, self._locks.acquire(tenant.tenant_id, conversation_id, request_id)
            )
            if lock is None:
                CHATS.labels("busy").inc()
                await _abort(
                    context,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"conversation {conversation_id} is still generating a reply; "
                    "wait for its done or error event",
                )
            if new_conversation:
                # Before the publish: the client may send its next message to another replica
                # the moment it reads `started`, long before memory has stored this turn.
                await self._unavailable_on_error(
                    context, self._directory.add(tenant.tenant_id, conversation_id)
                )
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
            )
            remaining = context.time_remaining()
            if remaining is not None and math.isfinite(remaining):
                turn.deadline.FromNanoseconds(accepted_at.ToNanoseconds() + int(remaining * 1e9))
            # Registered before publishing so that no early reply finds the stream missing.
            stream = self._router.open(tenant.tenant_id, request_id)
            try:
                await self._publisher.publish_turn(turn)
            except PublishOutcomeUnknownError as exc:
                # The claim is released below, so the retry we ask for publishes again.
                CHATS.labels("accepted_unknown").inc()
                await _abort(
                    context, grpc.StatusCode.UNAVAILABLE, _outcome_unknown(request_id, exc)
                )
            except BackendUnavailableError as exc:
                CHATS.labels("unavailable").inc()
                await _abort(context, grpc.StatusCode.UNAVAILABLE, str(exc))
            return lock, stream
        except BaseException:
            if stream is not None:
                self._router.close(tenant.tenant_id, request_id)
            if lock is not None:
                await lock.release()
            await self._requests.release(request_key(tenant.tenant_id, request_id))
            raise

    async def _relay(
        self,
        context: ChatContext,
        conversation_id: str,
        request_id: str,
        stream: ReplyStream,
        lock: HeldLock,
        recorder: Recorder,
        tenant_id: str,
    ) -> AsyncIterator[ChatEvent]:
        """Stream the reply to the caller and record it for retries."""
        last_sequence = 0
        finished = False
        accepted_at = time.monotonic()
        first_text_at: float | None = None
        try:
            await context.send_initial_metadata(((IDEMPOTENCY_HEADER, "new"),))
            started = ChatEvent(
                request_id=request_id,
                started=Started(conversation_id=conversation_id, request_id=request_id),
            )
            recorder.add(started)
            yield started
            try:
                async for event in stream.events(self._reply_idle_timeout_s):
                    last_sequence = event.sequence
                    recorder.add(event)
                    kind = event.WhichOneof("event")
                    if kind == "delta" and first_text_at is None:
                        first_text_at = time.monotonic()
                        TIME_TO_FIRST_TOKEN.observe(first_text_at - accepted_at)
                    elif kind == "done":
                        record_tokens(event.done.usage.output_tokens, first_text_at)
                    if is_terminal(event):
                        finished = True
                        # Free the conversation before the client hears `done`: its next
                        # message may arrive before this generator resumes.
                        await lock.release()
                    yield event
                CHATS.labels("completed").inc()
            except ReplyTimeoutError:
                CHATS.labels("timeout").inc()
                await self._cancel_quietly(
                    tenant_id, request_id, "no reply within the idle timeout"
                )
                finished = True
                timeout = _error_event(
                    request_id,
                    last_sequence + 1,
                    "DEADLINE_EXCEEDED",
                    f"no reply within {self._reply_idle_timeout_s:g}s",
                )
                recorder.add(timeout)
                await lock.release()
                yield timeout
            except StreamOverflowError as exc:
                CHATS.labels("overflow").inc()
                # The caller is cut off below (RESOURCE_EXHAUSTED); followers learn it here.
                recorder.add(
                    _error_event(
                        request_id,
                        last_sequence + 1,
                        "RESOURCE_EXHAUSTED",
                        f"the client read the reply stream too slowly ({exc})",
                    )
                )
                await _abort(
                    context,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"client read the reply stream too slowly ({exc})",
                )
        finally:
            if not finished and self._disconnect_grace_s > 0 and not _deadline_passed(context):
                # The caller left mid-reply: a retry may yet attach (see _keep_for_retry).
                orphan = asyncio.create_task(
                    self._keep_for_retry(
                        tenant_id, request_id, stream, lock, recorder, last_sequence
                    ),
                    name=f"keep-{request_id}",
                )
                self._orphans.add(orphan)
                orphan.add_done_callback(self._orphans.discard)
            else:
                await self._end_relay(
                    tenant_id, request_id, lock, recorder, finished, last_sequence
                )

    async def _end_relay(
        self,
        tenant_id: str,
        request_id: str,
        lock: HeldLock,
        recorder: Recorder,
        finished: bool,
        last_sequence: int,
    ) -> None:
        self._router.close(tenant_id, request_id)
        if not finished:
            # The client went away (or we failed) mid-reply: stop paying for tokens.
            CHATS.labels("cancelled").inc()
            await self._cancel_quietly(tenant_id, request_id, "client disconnected")
            recorder.add(
                _error_event(
                    request_id,
                    last_sequence + 1,
                    "CANCELLED",
                    "the caller that sent this request went away; its generation was cancelled",
                )
            )
        await lock.release()
        await recorder.finish()

    async def _keep_for_retry(
        self,
        tenant_id: str,
        request_id: str,
        stream: ReplyStream,
        lock: HeldLock,
        recorder: Recorder,
        last_sequence: int,
    ) -> None:
        """Go on recording a reply whose caller left, for `disconnect_grace_s`; then cancel it
        unless a retry follows it, in which case it runs to its end for that retry."""
        loop = asyncio.get_running_loop()
        decide_at = loop.time() + self._disconnect_grace_s
        decided = finished = False
        try:
            while True:
                if not decided and loop.time() >= decide_at:
                    decided = True
                    if await self._followers_quietly(request_key(tenant_id, request_id)) == 0:
                        break
                    CHATS.labels("resumed").inc()
                wait = self._reply_idle_timeout_s if decided else decide_at - loop.time()
                try:
                    event = await stream.next(max(wait, 0.0))
                except ReplyTimeoutError:
                    if decided:
                        break
                    continue
                except StreamOverflowError:
                    break
                last_sequence = event.sequence
                recorder.add(event)
                if is_terminal(event):
                    finished = True
                    break
        finally:
            await self._end_relay(tenant_id, request_id, lock, recorder, finished, last_sequence)

    async def _followers_quietly(self, request_id: str) -> int:
        try:
            return await self._requests.followers(request_id)
        except RequestStoreUnavailableError as exc:
            log.warning("followers of %s unknown (%s): cancelling", request_id, exc)
            return 0

    async def close(self) -> None:
        """Cancel the replies kept for retries (at shutdown, while Kafka is still up)."""
        for orphan in list(self._orphans):
            orphan.cancel()
        await asyncio.gather(*self._orphans, return_exceptions=True)

    async def _follow(
        self,
        context: ChatContext,
        request_id: str,
        record: RequestRecord,
        tenant: TenantConfig,
        request_print: str,
    ) -> AsyncIterator[ChatEvent]:
        """A retry: attach to the running request, or replay its finished reply."""
        if record.tenant_id != tenant.tenant_id or record.fingerprint != request_print:
            CHATS.labels("reused_request_id").inc()
            await _abort(
                context,
                grpc.StatusCode.ALREADY_EXISTS,
                f"request_id {request_id} was already used for a different request; "
                "use a new request_id (a UUID) for each new message",
            )
        if record.state is RequestState.RUNNING and not await self._owner_alive(record.owner):
            CHATS.labels("owner_gone").inc()
            await _abort(context, grpc.StatusCode.ABORTED, _owner_gone(request_id))
        key = request_key(tenant.tenant_id, request_id)
        mode = "replayed" if record.state is RequestState.DONE else "attached"
        CHATS.labels(mode).inc()
        if mode == "attached":
            # Counted, so that an owner whose caller left keeps the reply going for us.
            await self._unavailable_on_error(context, self._requests.follower_joined(key))
        await context.send_initial_metadata(((IDEMPOTENCY_HEADER, mode),))
        last_sequence = 0
        try:
            async for event in self._requests.follow(
                key, self._reply_idle_timeout_s, self._owner_alive
            ):
                last_sequence = event.sequence
                yield event
        except ReplyTimeoutError:
            yield _error_event(
                request_id,
                last_sequence + 1,
                "DEADLINE_EXCEEDED",
                f"no reply within {self._reply_idle_timeout_s:g}s",
            )
        except OwnerGoneError:
            yield _error_event(request_id, last_sequence + 1, "ABORTED", _owner_gone(request_id))
        except RequestVanishedError:
            yield _error_event(
                request_id,
                last_sequence + 1,
                "ABORTED",
                f"request {request_id} was not accepted; send it again",
            )
        except RequestStoreUnavailableError as exc:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        finally:
            if mode == "attached":
                await self._requests.follower_left(key)

    async def _cancel_quietly(self, tenant_id: str, request_id: str, reason: str) -> None:
        try:
            await self._publisher.publish_cancel(
                CancelGeneration(request_id=request_id, reason=reason, tenant_id=tenant_id)
            )
        except (BackendUnavailableError, asyncio.CancelledError):
            log.warning("could not publish the cancellation of %s", request_id)

    # ---- conversation methods: proxies to the memory service (conversations.py) ----------

    async def _tenant_or_abort(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        tenant_id = (await self._authenticate(context)).tenant_id
        if self._conversations is None:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED, "conversation methods are not configured"
            )
        return tenant_id

    async def GetConversation(
        self,
        request: GetConversationRequest,
        context: grpc.aio.ServicerContext[GetConversationRequest, Conversation],
    ) -> Conversation:
        tenant_id = await self._tenant_or_abort(context)
        assert self._conversations is not None
        return await self._conversations.get_conversation(tenant_id, request, context)

    async def ListConversations(
        self,
        request: ListConversationsRequest,
        context: grpc.aio.ServicerContext[ListConversationsRequest, ListConversationsResponse],
    ) -> ListConversationsResponse:
        tenant_id = await self._tenant_or_abort(context)
        assert self._conversations is not None
        return await self._conversations.list_conversations(tenant_id, request, context)

    async def DeleteConversation(
        self,
        request: DeleteConversationRequest,
        context: grpc.aio.ServicerContext[DeleteConversationRequest, DeleteConversationResponse],
    ) -> DeleteConversationResponse:
        tenant_id = await self._tenant_or_abort(context)
        assert self._conversations is not None
        return await self._conversations.delete_conversation(tenant_id, request, context)

    async def SubmitFeedback(
        self,
        request: SubmitFeedbackRequest,
        context: grpc.aio.ServicerContext[SubmitFeedbackRequest, SubmitFeedbackResponse],
    ) -> SubmitFeedbackResponse:
        tenant = await self._authenticate(context)
        if self._conversations is None:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED, "conversation methods are not configured"
            )
        if request.comment:
            redacted = SubmitFeedbackRequest()
            redacted.CopyFrom(request)
            redacted.comment = self._redaction.text(request.comment, tenant)
            request = redacted
        assert self._conversations is not None
        return await self._conversations.submit_feedback(tenant.tenant_id, request, context)
