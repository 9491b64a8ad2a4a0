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

import asyncio
import logging
import math
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from typing import Protocol, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import trace
from prometheus_client import Counter, Histogram

from switchboard.common.tenants import TenantConfig
from switchboard.gateway.auth import TenantAuthenticator, TenantLookupError
from switchboard.gateway.directory import ConversationDirectory, DirectoryUnavailableError
from switchboard.gateway.quotas import Quotas, QuotaUnavailableError, Refusal
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
from switchboard.v1.chat_pb2 import ChatEvent, ChatRequest, Error, Started
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
CHATS = Counter("switchboard_gateway_chats", "Chat calls by outcome", ["outcome"])

T = TypeVar("T")
# Called once a call is admitted, before its first event, with how: "new", "attached" (a
# retry following a running request) or "replayed" (a retry of a finished one).
OnAdmitted = Callable[[str], Awaitable[None]]
TimeRemaining = Callable[[], float | None]


def record_tokens(output_tokens: int, first_text_at: float | None) -> None:
    """Account the tokens of a finished reply."""
    OUTPUT_TOKENS.inc(output_tokens)
    if first_text_at is not None and output_tokens:
        elapsed = time.monotonic() - first_text_at
        if elapsed > 0:
            STREAM_TOKENS_PER_SECOND.observe(output_tokens / elapsed)


class Refused(Exception):
    """A call the pipeline will not serve: the gRPC status it means, and a message naming the
    problem. `refusal` is set for RESOURCE_EXHAUSTED (it carries the retry delay)."""

    def __init__(self, code: grpc.StatusCode, message: str, refusal: Refusal | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.refusal = refusal


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


def error_event(request_id: str, sequence: int, code: str, message: str) -> ChatEvent:
    """A terminal `error` event."""
    return ChatEvent(
        request_id=request_id, sequence=sequence, error=Error(code=code, message=message)
    )


def _owner_gone(request_id: str) -> str:
    return (
        f"the gateway that accepted request {request_id} stopped before its reply finished; "
        "the reply cannot be resumed. Read the conversation to see whether the turn was "
        "stored, or send the message again with a new request_id"
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
        quotas: Quotas,
        requests: RequestStore,
        owner_alive: Callable[[str], Awaitable[bool]],
        publisher: TurnPublisher,
        locks: ConversationLocks,
        conversation_directory: ConversationDirectory,
        router: ReplyRouter,
        reply_topic: str,
        reply_idle_timeout_s: float,
        disconnect_grace_s: float = 0.0,
    ) -> None:
        self._authenticator = authenticator
        self.limits = limits
        self._quotas = quotas
        self._requests = requests
        self._owner_alive = owner_alive
        self._publisher = publisher
        self._locks = locks
        self.directory = conversation_directory
        self._router = router
        self._reply_topic = reply_topic
        self._reply_idle_timeout_s = reply_idle_timeout_s
        self._disconnect_grace_s = disconnect_grace_s
        self.redaction = RequestRedactor()
        # Replies kept going for a retry after their caller left (see _keep_for_retry).
        self._orphans: set[asyncio.Task[None]] = set()

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
            if request.request_id:
                existing = await self._unavailable_on_error(self._requests.get(key))
                if existing is not None:
                    async for event in self._follow(
                        request_id, existing, tenant, request_print, on_admitted
                    ):
                        yield event
                    return

            if request.conversation_id:
                await self.require_conversation(tenant, request.conversation_id)

            refusal = await self._unavailable_on_error(self._quotas.admit(tenant, raw_user_id))
            if refusal is not None:
                CHATS.labels("exhausted").inc()
                raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal.message, refusal)

            record = RequestRecord(
                tenant.tenant_id, request_print, self._reply_topic, RequestState.RUNNING
            )
            existing = await self._unavailable_on_error(self._requests.claim(key, record))
            if existing is not None:  # a concurrent call with the same id won the claim
                async for event in self._follow(
                    request_id, existing, tenant, request_print, on_admitted
                ):
                    yield event
                return

            new_conversation = not request.conversation_id
            conversation_id = request.conversation_id or str(uuid.uuid4())
            with trace.use_span(span, end_on_exit=False):
                lock, stream = await self._accept(
                    tenant, conversation_id, request_id, request, new_conversation, time_remaining
                )
            async for event in self._relay(
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

    async def _accept(
        self,
        tenant: TenantConfig,
        conversation_id: str,
        request_id: str,
        request: ChatRequest,
        new_conversation: bool,
        time_remaining: TimeRemaining,
    ) -> tuple[HeldLock, ReplyStream]:
        """Lock the conversation and publish the turn; on any refusal, forget the claim."""
        lock: HeldLock | None = None
        stream: ReplyStream | None = None
        try:
            lock = await self._unavailable_on_error(
                self._locks.acquire(tenant.tenant_id, conversation_id, request_id)
            )
            if lock is None:
                CHATS.labels("busy").inc()
                raise Refused(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"conversation {conversation_id} is still generating a reply; "
                    "wait for its done or error event",
                )
            if new_conversation:
                # Before the publish: the client may send its next message to another replica
                # the moment it reads `started`, long before memory has stored this turn.
                await self._unavailable_on_error(
                    self.directory.add(tenant.tenant_id, conversation_id)
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
        conversation_id: str,
        request_id: str,
        stream: ReplyStream,
        lock: HeldLock,
        recorder: Recorder,
        tenant_id: str,
        time_remaining: TimeRemaining,
        on_admitted: OnAdmitted,
    ) -> AsyncIterator[ChatEvent]:
        """Stream the reply to the caller and record it for retries."""
        last_sequence = 0
        finished = False
        accepted_at = time.monotonic()
        first_text_at: float | None = None
        try:
            await on_admitted("new")
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
                timeout = error_event(
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
                    error_event(
                        request_id,
                        last_sequence + 1,
                        "RESOURCE_EXHAUSTED",
                        f"the client read the reply stream too slowly ({exc})",
                    )
                )
                raise Refused(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"client read the reply stream too slowly ({exc})",
                ) from exc
        finally:
            remaining = time_remaining()
            deadline_passed = remaining is not None and remaining <= 0
            if not finished and self._disconnect_grace_s > 0 and not deadline_passed:
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
                error_event(
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
        request_id: str,
        record: RequestRecord,
        tenant: TenantConfig,
        request_print: str,
        on_admitted: OnAdmitted,
    ) -> AsyncIterator[ChatEvent]:
        """A retry: attach to the running request, or replay its finished reply."""
        if record.tenant_id != tenant.tenant_id or record.fingerprint != request_print:
            CHATS.labels("reused_request_id").inc()
            raise Refused(
                grpc.StatusCode.ALREADY_EXISTS,
                f"request_id {request_id} was already used for a different request; "
                "use a new request_id (a UUID) for each new message",
            )
        if record.state is RequestState.RUNNING and not await self._owner_alive(record.owner):
            CHATS.labels("owner_gone").inc()
            raise Refused(grpc.StatusCode.ABORTED, _owner_gone(request_id))
        key = request_key(tenant.tenant_id, request_id)
        mode = "replayed" if record.state is RequestState.DONE else "attached"
        CHATS.labels(mode).inc()
        if mode == "attached":
            # Counted, so that an owner whose caller left keeps the reply going for us.
            await self._unavailable_on_error(self._requests.follower_joined(key))
        await on_admitted(mode)
        last_sequence = 0
        try:
            async for event in self._requests.follow(
                key, self._reply_idle_timeout_s, self._owner_alive
            ):
                last_sequence = event.sequence
                yield event
        except ReplyTimeoutError:
            yield error_event(
                request_id,
                last_sequence + 1,
                "DEADLINE_EXCEEDED",
                f"no reply within {self._reply_idle_timeout_s:g}s",
            )
        except OwnerGoneError:
            yield error_event(request_id, last_sequence + 1, "ABORTED", _owner_gone(request_id))
        except RequestVanishedError:
            yield error_event(
                request_id,
                last_sequence + 1,
                "ABORTED",
                f"request {request_id} was not accepted; send it again",
            )
        except RequestStoreUnavailableError as exc:
            raise Refused(grpc.StatusCode.UNAVAILABLE, str(exc)) from exc
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
