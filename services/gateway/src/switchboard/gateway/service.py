"""`switchboard.v1.ChatService` over gRPC: a thin adapter over the door-independent `ChatCore`
(core.py), which authenticates, validates, admits, publishes and relays. A `Refused` becomes
the gRPC status it names; RESOURCE_EXHAUSTED carries the retry delay in its trailers.
"""

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeAlias

import grpc
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status

from switchboard.common.tenants import TenantConfig
from switchboard.gateway.admission import Admission
from switchboard.gateway.auth import TenantAuthenticator
from switchboard.gateway.conversations import ConversationMethods
from switchboard.gateway.core import ChatCore, Refused
from switchboard.gateway.directory import ConversationDirectory
from switchboard.gateway.idempotency import RequestStore
from switchboard.gateway.metrics import CHATS, record_tokens
from switchboard.gateway.ports import (
    BackendUnavailableError,
    ConversationLocks,
    HeldLock,
    PublishOutcomeUnknownError,
    TurnPublisher,
)
from switchboard.gateway.quotas import Refusal, retry_after_ms
from switchboard.gateway.replies import ReplyRouter
from switchboard.gateway.validation import ChatLimits
from switchboard.v1 import chat_pb2_grpc
from switchboard.v1.chat_pb2 import (
    ChatEvent,
    ChatRequest,
    Conversation,
    DeleteConversationRequest,
    DeleteConversationResponse,
    GetConversationRequest,
    ListConversationsRequest,
    ListConversationsResponse,
    SubmitFeedbackRequest,
    SubmitFeedbackResponse,
)

__all__ = [
    "CHATS",
    "BackendUnavailableError",
    "ChatService",
    "ConversationLocks",
    "HeldLock",
    "PublishOutcomeUnknownError",
    "TurnPublisher",
    "record_tokens",
    "resource_exhausted_trailers",
]

# Response headers of Chat (initial metadata).
IDEMPOTENCY_HEADER = "sb-idempotency"  # "new", "attached" or "replayed"
# Trailers of RESOURCE_EXHAUSTED: the delay in milliseconds, and the same as a
# google.rpc.RetryInfo in the standard rich-status trailer.
RETRY_AFTER_TRAILER = "retry-after-ms"

ChatContext: TypeAlias = grpc.aio.ServicerContext[ChatRequest, ChatEvent]


async def _abort(
    context: grpc.aio.ServicerContext[Any, Any],
    code: grpc.StatusCode,
    details: str,
    trailing_metadata: tuple[tuple[str, str | bytes], ...] = (),
) -> NoReturn:
    """End the call with a status; `context.abort` raises, this says so to the type checker."""
    await context.abort(code, details, trailing_metadata=trailing_metadata)
    raise AssertionError("context.abort returned")


async def _abort_refused(context: grpc.aio.ServicerContext[Any, Any], exc: Refused) -> NoReturn:
    trailers = resource_exhausted_trailers(exc.refusal) if exc.refusal is not None else ()
    await _abort(context, exc.code, exc.message, trailing_metadata=trailers)


def resource_exhausted_trailers(refusal: Refusal) -> tuple[tuple[str, str | bytes], ...]:
    """`retry-after-ms` and a google.rpc.Status carrying a RetryInfo (grpcio-status)."""
    delay_ms = retry_after_ms(refusal)
    retry_info = AnyProto()
    retry_info.Pack(
        error_details_pb2.RetryInfo(
            retry_delay=Duration(seconds=delay_ms // 1000, nanos=(delay_ms % 1000) * 1_000_000)
        )
    )
    status = rpc_status.to_status(
        status_pb2.Status(
            code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
            message=refusal.message,
            details=[retry_info],
        )
    )
    return ((RETRY_AFTER_TRAILER, str(delay_ms)), *status.trailing_metadata)


class ChatService(chat_pb2_grpc.ChatServiceServicer):
    """Accepts one message per call and streams its reply back."""

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
        conversations: ConversationMethods | None = None,
        disconnect_grace_s: float = 0.0,
    ) -> None:
        self.core = ChatCore(
            authenticator=authenticator,
            limits=limits,
            admission=admission,
            requests=requests,
            owner_alive=owner_alive,
            publisher=publisher,
            conversation_directory=conversation_directory,
            router=router,
            reply_topic=reply_topic,
            reply_idle_timeout_s=reply_idle_timeout_s,
            disconnect_grace_s=disconnect_grace_s,
        )
        self.conversations = conversations

    async def Chat(self, request: ChatRequest, context: ChatContext) -> AsyncIterator[ChatEvent]:
        async def admitted(mode: str) -> None:
            await context.send_initial_metadata(((IDEMPOTENCY_HEADER, mode),))

        try:
            tenant = await self.core.authenticate(context.invocation_metadata() or ())
            events = self.core.chat(
                tenant, request, time_remaining=context.time_remaining, on_admitted=admitted
            )
            async with contextlib.aclosing(events):
                async for event in events:
                    yield event
        except Refused as exc:
            await _abort_refused(context, exc)

    async def close(self) -> None:
        """Cancel the replies kept for retries (at shutdown, while Kafka is still up)."""
        await self.core.close()

    # ---- conversation methods: proxies to the memory service (conversations.py) ----------

    async def _tenant_or_abort(self, context: grpc.aio.ServicerContext[Any, Any]) -> TenantConfig:
        try:
            tenant = await self.core.authenticate(context.invocation_metadata() or ())
        except Refused as exc:
            await _abort_refused(context, exc)
        if self.conversations is None:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED, "conversation methods are not configured"
            )
        return tenant

    async def GetConversation(
        self,
        request: GetConversationRequest,
        context: grpc.aio.ServicerContext[GetConversationRequest, Conversation],
    ) -> Conversation:
        tenant_id = (await self._tenant_or_abort(context)).tenant_id
        assert self.conversations is not None
        return await self.conversations.get_conversation(tenant_id, request, context)

    async def ListConversations(
        self,
        request: ListConversationsRequest,
        context: grpc.aio.ServicerContext[ListConversationsRequest, ListConversationsResponse],
    ) -> ListConversationsResponse:
        tenant_id = (await self._tenant_or_abort(context)).tenant_id
        assert self.conversations is not None
        return await self.conversations.list_conversations(tenant_id, request, context)

    async def DeleteConversation(
        self,
        request: DeleteConversationRequest,
        context: grpc.aio.ServicerContext[DeleteConversationRequest, DeleteConversationResponse],
    ) -> DeleteConversationResponse:
        tenant_id = (await self._tenant_or_abort(context)).tenant_id
        assert self.conversations is not None
        return await self.conversations.delete_conversation(tenant_id, request, context)

    async def SubmitFeedback(
        self,
        request: SubmitFeedbackRequest,
        context: grpc.aio.ServicerContext[SubmitFeedbackRequest, SubmitFeedbackResponse],
    ) -> SubmitFeedbackResponse:
        tenant = await self._tenant_or_abort(context)
        assert self.conversations is not None
        request = self.core.redaction.feedback(request, tenant)
        return await self.conversations.submit_feedback(tenant.tenant_id, request, context)
