"""The gateway's conversation methods: thin proxies to the memory service's gRPC API.

The tenant is the authenticated caller's, passed in by `ChatService`; nothing in the
request body can name another. The memory service owns the rules (page sizes, page
tokens, comment length) and its INVALID_ARGUMENT and NOT_FOUND answers reach the client
as they are; a memory service that cannot be reached, or answers too slowly, is
UNAVAILABLE, so the client knows that retrying may help.

A deleted conversation is also dropped from the gateway's conversation directory, so that
the next Chat on it is NOT_FOUND.
"""

import logging
from typing import Any, NoReturn, Protocol, TypeAlias

import grpc

from switchboard.common.telemetry import grpc_client_interceptors
from switchboard.gateway.directory import ConversationDirectory, DirectoryUnavailableError
from switchboard.v1.chat_pb2 import (
    RATING_DOWN,
    RATING_UP,
    Conversation,
    DeleteConversationRequest,
    DeleteConversationResponse,
    GetConversationRequest,
    ListConversationsRequest,
    ListConversationsResponse,
    SubmitFeedbackRequest,
    SubmitFeedbackResponse,
)
from switchboard.v1.memory_pb2 import (
    MemoryDeleteConversationRequest,
    MemoryGetConversationRequest,
    MemoryListConversationsRequest,
    MemorySubmitFeedbackRequest,
)
from switchboard.v1.memory_pb2_grpc import MemoryServiceStub

log = logging.getLogger(__name__)

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

MAX_ID_CHARS = 128
# Statuses of the memory service that are the client's to see, details included.
_PASSED_THROUGH = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
)
_UNAVAILABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class MemoryApi(Protocol):
    """The part of the memory service's stub the gateway uses."""

    def GetConversation(self, request: MemoryGetConversationRequest, *, timeout: float) -> Any: ...

    def ListConversations(
        self, request: MemoryListConversationsRequest, *, timeout: float
    ) -> Any: ...

    def DeleteConversation(
        self, request: MemoryDeleteConversationRequest, *, timeout: float
    ) -> Any: ...

    def SubmitFeedback(self, request: MemorySubmitFeedbackRequest, *, timeout: float) -> Any: ...


def id_problem(field: str, value: str) -> str | None:
    """What is wrong with a required identifier, or None."""
    if not value:
        return f"{field} is required"
    if len(value) > MAX_ID_CHARS:
        return f"{field} is longer than {MAX_ID_CHARS} characters"
    if not all(c.isalnum() or c in "-_.:" for c in value):
        return f"{field} may hold only letters, digits and - _ . :"
    return None


async def _abort(context: Context, code: grpc.StatusCode, details: str) -> NoReturn:
    await context.abort(code, details)
    raise AssertionError("abort returns only by raising")


class ConversationMethods:
    """GetConversation, ListConversations, DeleteConversation and SubmitFeedback."""

    def __init__(
        self,
        memory: MemoryApi,
        timeout_s: float,
        directory: ConversationDirectory | None = None,
    ) -> None:
        self._memory = memory
        self._timeout_s = timeout_s
        self._directory = directory

    async def get_conversation(
        self, tenant_id: str, request: GetConversationRequest, context: Context
    ) -> Conversation:
        """One conversation of the caller's tenant, with its messages."""
        await self._check_id(context, "conversation_id", request.conversation_id)
        conversation: Conversation = await self._call(
            context,
            "GetConversation",
            MemoryGetConversationRequest(
                tenant_id=tenant_id, conversation_id=request.conversation_id
            ),
        )
        return conversation

    async def list_conversations(
        self, tenant_id: str, request: ListConversationsRequest, context: Context
    ) -> ListConversationsResponse:
        """A page of the tenant's conversations (one user's when `user_id` is set)."""
        page: ListConversationsResponse = await self._call(
            context,
            "ListConversations",
            MemoryListConversationsRequest(
                tenant_id=tenant_id,
                user_id=request.user_id,
                page_size=request.page_size,
                page_token=request.page_token,
            ),
        )
        return page

    async def delete_conversation(
        self, tenant_id: str, request: DeleteConversationRequest, context: Context
    ) -> DeleteConversationResponse:
        """Hard-delete a conversation of the caller's tenant, then forget it in the directory
        (also when memory no longer has it: a retry after a failed forget completes it)."""
        await self._check_id(context, "conversation_id", request.conversation_id)
        try:
            await self._memory.DeleteConversation(
                MemoryDeleteConversationRequest(
                    tenant_id=tenant_id, conversation_id=request.conversation_id
                ),
                timeout=self._timeout_s,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                await self._forget(context, tenant_id, request.conversation_id)
            await self._fail(context, "DeleteConversation", exc)
        await self._forget(context, tenant_id, request.conversation_id)
        return DeleteConversationResponse()

    async def _forget(self, context: Context, tenant_id: str, conversation_id: str) -> None:
        if self._directory is None:
            return
        try:
            await self._directory.remove(tenant_id, conversation_id)
        except DirectoryUnavailableError as exc:
            log.warning("conversation %s not forgotten: %s", conversation_id, exc)
            await _abort(
                context,
                grpc.StatusCode.UNAVAILABLE,
                "the conversation directory is unavailable; retry DeleteConversation",
            )

    async def submit_feedback(
        self, tenant_id: str, request: SubmitFeedbackRequest, context: Context
    ) -> SubmitFeedbackResponse:
        """Rate one reply of the caller's tenant."""
        await self._check_id(context, "request_id", request.request_id)
        if request.rating not in (RATING_UP, RATING_DOWN):
            await _abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, "rating must be RATING_UP or RATING_DOWN"
            )
        await self._call(
            context,
            "SubmitFeedback",
            MemorySubmitFeedbackRequest(
                tenant_id=tenant_id,
                request_id=request.request_id,
                rating=request.rating,
                comment=request.comment,
            ),
        )
        return SubmitFeedbackResponse()

    async def _check_id(self, context: Context, field: str, value: str) -> None:
        problem = id_problem(field, value)
        if problem:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, problem)

    async def _call(self, context: Context, method: str, request: Any) -> Any:
        try:
            return await getattr(self._memory, method)(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            await self._fail(context, method, exc)

    async def _fail(self, context: Context, method: str, exc: grpc.aio.AioRpcError) -> NoReturn:
        """End the call with the status that memory's failure means to the client."""
        code = exc.code()
        if code in _PASSED_THROUGH:
            await _abort(context, code, exc.details() or code.name)
        if code in _UNAVAILABLE:
            log.warning("memory service unavailable for %s: %s", method, code.name)
            await _abort(
                context,
                grpc.StatusCode.UNAVAILABLE,
                "the conversation store is unavailable; retry later",
            )
        log.error("memory service failed %s: %s %s", method, code.name, exc.details())
        await _abort(context, grpc.StatusCode.INTERNAL, f"{method} failed")


class MemoryClient:
    """The gRPC channel to the memory service."""

    def __init__(self, target: str) -> None:
        self._channel = grpc.aio.insecure_channel(target, interceptors=grpc_client_interceptors())
        self.stub = MemoryServiceStub(self._channel)

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()
