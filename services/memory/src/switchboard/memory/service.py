"""`switchboard.v1.MemoryService` over gRPC."""

import logging

import grpc
from pymongo.errors import PyMongoError

from switchboard.memory.context import fit_context
from switchboard.memory.store import ConversationStore
from switchboard.memory.tokens import count_tokens
from switchboard.v1 import memory_pb2_grpc
from switchboard.v1.memory_pb2 import ConversationContext, GetContextRequest

log = logging.getLogger(__name__)


class MemoryService(memory_pb2_grpc.MemoryServiceServicer):
    """Answers context queries from the store."""

    def __init__(self, store: ConversationStore, default_tokens: int, scan_limit: int) -> None:
        self._store = store
        self._default_tokens = default_tokens
        self._scan_limit = scan_limit

    async def GetContext(
        self,
        request: GetContextRequest,
        context: grpc.aio.ServicerContext[GetContextRequest, ConversationContext],
    ) -> ConversationContext:
        if not request.tenant_id or not request.conversation_id:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "tenant_id and conversation_id are required"
            )
        try:
            newest = await self._store.newest_messages(
                request.tenant_id, request.conversation_id, self._scan_limit
            )
        except PyMongoError as exc:
            # Chats go on without history while the database is away.
            log.warning("store unavailable, serving a degraded context: %s", exc)
            return ConversationContext(degraded=True)
        return fit_context(
            "",
            newest,
            request.max_tokens or self._default_tokens,
            lambda text: count_tokens(text, request.model),
        )

    # Conversation reads and deletion arrive with the memory issue (6); until then they
    # answer UNIMPLEMENTED explicitly.
    async def GetConversation(self, request, context):  # type: ignore[no-untyped-def]
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "GetConversation is not available yet")

    async def ListConversations(self, request, context):  # type: ignore[no-untyped-def]
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "ListConversations is not available yet")

    async def DeleteConversation(self, request, context):  # type: ignore[no-untyped-def]
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "DeleteConversation is not available yet"
        )

    async def ExportConversation(self, request, context):  # type: ignore[no-untyped-def]
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "ExportConversation is not available yet"
        )

    async def SubmitFeedback(self, request, context):  # type: ignore[no-untyped-def]
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "SubmitFeedback is not available yet")
