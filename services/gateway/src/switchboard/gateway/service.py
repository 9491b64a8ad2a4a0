"""`switchboard.v1.ChatService` over gRPC: authenticate, validate, publish, relay."""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any, Protocol

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import trace
from prometheus_client import Counter

from switchboard.gateway.auth import ApiKeyAuthenticator
from switchboard.gateway.conversations import ConversationMethods
from switchboard.gateway.replies import (
    ReplyRouter,
    ReplyTimeoutError,
    StreamOverflowError,
    is_terminal,
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

CHATS = Counter("switchboard_gateway_chats", "Chat calls by outcome", ["outcome"])


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


class ChatService(chat_pb2_grpc.ChatServiceServicer):
    """Accepts one message per call and streams its reply back."""

    def __init__(
        self,
        *,
        authenticator: ApiKeyAuthenticator,
        limits: ChatLimits,
        publisher: TurnPublisher,
        locks: ConversationLocks,
        router: ReplyRouter,
        reply_topic: str,
        reply_idle_timeout_s: float,
        conversations: ConversationMethods | None = None,
    ) -> None:
        self._authenticator = authenticator
        self._limits = limits
        self._publisher = publisher
        self._locks = locks
        self._router = router
        self._reply_topic = reply_topic
        self._reply_idle_timeout_s = reply_idle_timeout_s
        self._conversations = conversations

    async def Chat(
        self, request: ChatRequest, context: grpc.aio.ServicerContext[ChatRequest, ChatEvent]
    ) -> AsyncIterator[ChatEvent]:
        tenant_id = self._authenticator.tenant_for(context.invocation_metadata() or ())
        if tenant_id is None:
            CHATS.labels("unauthenticated").inc()
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or unknown API key")
        problem = chat_request_problem(request, self._limits)
        if problem is not None:
            CHATS.labels("invalid").inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        assert tenant_id is not None
        conversation_id = request.conversation_id or str(uuid.uuid4())
        request_id = request.request_id or str(uuid.uuid4())

        with tracer.start_as_current_span(
            "chat", kind=trace.SpanKind.SERVER, attributes={"switchboard.request_id": request_id}
        ):
            try:
                lock = await self._locks.acquire(tenant_id, conversation_id, request_id)
            except BackendUnavailableError as exc:
                CHATS.labels("unavailable").inc()
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            if lock is None:
                CHATS.labels("busy").inc()
                await context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"conversation {conversation_id} is still generating a reply",
                )
            assert lock is not None
            try:
                async for event in self._relay(
                    context, tenant_id, conversation_id, request_id, request, lock
                ):
                    yield event
            finally:
                await lock.release()

    async def _relay(
        self,
        context: grpc.aio.ServicerContext[ChatRequest, ChatEvent],
        tenant_id: str,
        conversation_id: str,
        request_id: str,
        request: ChatRequest,
        lock: HeldLock,
    ) -> AsyncIterator[ChatEvent]:
        accepted_at = Timestamp()
        accepted_at.GetCurrentTime()
        turn = TurnRequest(
            tenant_id=tenant_id,
            conversation_id=conversation_id,
            request_id=request_id,
            user_id=request.user_id,
            message=request.message,
            options=request.options,
            reply_topic=self._reply_topic,
            accepted_at=accepted_at,
        )
        # Registered before publishing so that no early reply finds the stream missing.
        stream = self._router.open(request_id)
        finished = False
        try:
            try:
                await self._publisher.publish_turn(turn)
            except BackendUnavailableError as exc:
                CHATS.labels("unavailable").inc()
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            yield ChatEvent(
                request_id=request_id,
                started=Started(conversation_id=conversation_id, request_id=request_id),
            )
            try:
                async for event in stream.events(self._reply_idle_timeout_s):
                    finished = is_terminal(event)
                    if finished:
                        # Free the conversation before the client hears `done`: its next
                        # message may arrive before this generator resumes.
                        await lock.release()
                    yield event
            except ReplyTimeoutError:
                finished = True
                CHATS.labels("timeout").inc()
                await lock.release()
                yield ChatEvent(
                    request_id=request_id,
                    error=Error(
                        code="DEADLINE_EXCEEDED",
                        message=f"no reply within {self._reply_idle_timeout_s:g}s",
                    ),
                )
                return
            except StreamOverflowError as exc:
                CHATS.labels("overflow").inc()
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"client read the reply stream too slowly ({exc})",
                )
            CHATS.labels("completed").inc()
        finally:
            self._router.close(request_id)
            if not finished:
                # The client went away (or we failed) mid-reply: stop paying for tokens.
                await self._cancel_quietly(request_id)

    async def _cancel_quietly(self, request_id: str) -> None:
        try:
            await self._publisher.publish_cancel(
                CancelGeneration(request_id=request_id, reason="client disconnected")
            )
        except (BackendUnavailableError, asyncio.CancelledError):
            log.warning("could not publish the cancellation of %s", request_id)

    # ---- conversation methods: proxies to the memory service (conversations.py) ----------

    async def _tenant_or_abort(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        tenant_id = self._authenticator.tenant_for(context.invocation_metadata() or ())
        if tenant_id is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or unknown API key")
        assert tenant_id is not None
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
        tenant_id = await self._tenant_or_abort(context)
        assert self._conversations is not None
        return await self._conversations.submit_feedback(tenant_id, request, context)
