"""`switchboard.v1.MemoryService` over gRPC.

Statuses: a missing or malformed argument is INVALID_ARGUMENT naming the field; a
conversation that does not exist for the tenant (another tenant's, deleted, never seen) is
NOT_FOUND, worded the same in every case so nothing reveals that it exists elsewhere; a
store that cannot be reached is UNAVAILABLE, except for `GetContext`, which degrades.
"""

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, NoReturn, TypeAlias, TypeVar

import grpc
import pymongo
from pymongo.errors import PyMongoError

from switchboard.conversation.facts import facts_of
from switchboard.conversation.records import (
    ContextSnapshot,
    StoredMessage,
    messages_of,
    turn_problem,
)
from switchboard.conversation.tokens import remembering_counter
from switchboard.conversation.window import fit_context
from switchboard.memory.cache import ContextCache
from switchboard.memory.metrics import CONTEXTS
from switchboard.memory.paging import InvalidPageTokenError, PageToken
from switchboard.memory.settings import MemorySettings
from switchboard.memory.store import ConversationStore, Document
from switchboard.v1 import memory_pb2_grpc
from switchboard.v1.chat_pb2 import (
    RATING_UNSPECIFIED,
    Conversation,
    ConversationSummary,
    DeleteConversationResponse,
    ListConversationsResponse,
    Message,
    Rating,
    SubmitFeedbackResponse,
)
from switchboard.v1.memory_pb2 import (
    ConversationContext,
    ExportedConversation,
    GetContextRequest,
    MemoryDeleteConversationRequest,
    MemoryExportConversationRequest,
    MemoryGetConversationRequest,
    MemoryListConversationsRequest,
    MemorySubmitFeedbackRequest,
)

log = logging.getLogger(__name__)


MAX_ID_CHARS = 128
# The share of the caller's remaining deadline a context read may use.
DEADLINE_SHARE = 0.8
FEEDBACK_POLL_S = 0.1

T = TypeVar("T")
Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


def _problem_with_ids(**ids: str) -> str | None:
    for field, value in ids.items():
        if not value:
            return f"{field} is required"
        if len(value) > MAX_ID_CHARS:
            return f"{field} is longer than {MAX_ID_CHARS} characters"
    return None


def _not_found(conversation_id: str) -> str:
    return f"conversation {conversation_id!r} not found"


class MemoryService(memory_pb2_grpc.MemoryServiceServicer):
    """Context windows and conversation reads, scoped by the tenant of each request."""

    def __init__(
        self, store: ConversationStore, cache: ContextCache, settings: MemorySettings
    ) -> None:
        self._store = store
        self._cache = cache
        self._settings = settings
        self._count_tokens = remembering_counter(settings.token_count_cache_max_bytes)

    # ---- GetContext ----------------------------------------------------------------------

    async def GetContext(
        self,
        request: GetContextRequest,
        context: grpc.aio.ServicerContext[GetContextRequest, ConversationContext],
    ) -> ConversationContext:
        problem = _problem_with_ids(
            tenant_id=request.tenant_id, conversation_id=request.conversation_id
        )
        if problem:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, problem)
        key = (request.tenant_id, request.conversation_id)
        received: tuple[StoredMessage, ...] = ()
        if request.HasField("pending"):
            pending = request.pending
            problem = turn_problem(pending)
            if problem is None and key != (pending.tenant_id, pending.conversation_id):
                problem = "pending is a turn of another conversation"
            if problem:
                await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"pending: {problem}")
            # As if received from chat.turns (which it is, or soon will be; a repeat there
            # changes nothing), so the context holds it even before its write.
            received = messages_of(pending)
            self._cache.add(key, received, [fact for fact, _ in facts_of(received)])
        timeout_s = self._settings.context_read_timeout_s
        remaining = context.time_remaining()
        if remaining is not None:
            timeout_s = max(0.05, min(timeout_s, remaining * DEADLINE_SHARE))
        reused = self._cache.reuse(
            key,
            request.request_id if self._settings.context_reuse else "",
            self._settings.context_scan_limit,
            self._settings.context_max_facts,
        )
        if reused is not None:
            # The previous turn's read plus that turn, as received: what the store will hold.
            CONTEXTS.labels("reused").inc()
            return self._fit(request, reused)
        degraded = False
        try:
            # pymongo.timeout bounds every operation inside, server selection included.
            with pymongo.timeout(timeout_s):
                snapshot, unstored = await self._snapshot(request, key, received, whole=False)
                result = self._fit(request, snapshot)
                if not snapshot.complete and len(result.messages) == len(snapshot.newest_first):
                    # Every message read fit: older unsummarised ones may fit too.
                    snapshot, unstored = await self._snapshot(request, key, received, whole=True)
                    result = self._fit(request, snapshot)
            CONTEXTS.labels("store+received" if unstored else "store").inc()
        except PyMongoError as exc:
            degraded = True
            cached = self._cache.get(key)
            CONTEXTS.labels("cache" if cached else "empty").inc()
            log.warning(
                "store unavailable (%s): context of %s from %s",
                type(exc).__name__,
                request.conversation_id,
                "the cache" if cached else "nothing (current message only)",
            )
            result = self._fit(request, cached or ContextSnapshot())
        result.degraded = degraded
        if degraded:
            result.complete = False
        return result

    async def _snapshot(
        self,
        request: GetContextRequest,
        key: tuple[str, str],
        pending: Sequence[StoredMessage],
        *,
        whole: bool,
    ) -> tuple[ContextSnapshot, bool]:
        """The stored snapshot, with the turns received but not yet written (and `pending`,
        the request's, even when the cache keeps nothing); whether any."""
        snapshot = await self._store.context_snapshot(
            request.tenant_id,
            request.conversation_id,
            self._settings.context_scan_limit,
            self._settings.context_max_facts,
            whole=whole,
        )
        # A turn this process received but has not finished writing belongs in the
        # context already: the client may send its next message the moment it hears
        # `done`, before the write is acknowledged.
        newest = snapshot.newest_first[0].position if snapshot.newest_first else 0
        after = max(newest, snapshot.summary.until_position)
        unstored = self._cache.newer_than(key, after)
        held = {(m.request_id, m.role) for m in unstored}
        unstored.extend(
            m for m in pending if m.position > after and (m.request_id, m.role) not in held
        )
        unstored.sort(key=lambda m: m.position, reverse=True)
        self._cache.remember(key, snapshot, request.request_id)
        if unstored:
            # Their facts too: the store has not got them yet either.
            known = {(f.kind, f.value) for f in snapshot.facts}
            facts = [f for f, _ in facts_of(unstored[::-1]) if (f.kind, f.value) not in known]
            snapshot = replace(
                snapshot,
                newest_first=(*unstored, *snapshot.newest_first),
                facts=(*snapshot.facts, *facts)[-self._settings.context_max_facts :]
                if self._settings.context_max_facts
                else (),
            )
        return snapshot, bool(unstored)

    def _fit(self, request: GetContextRequest, snapshot: ContextSnapshot) -> ConversationContext:
        result = fit_context(
            snapshot.summary.text,
            [m.to_proto() for m in snapshot.newest_first],
            request.max_tokens or self._settings.default_context_tokens,
            lambda text: self._count_tokens(text, request.model),
            snapshot.facts,
        )
        settings = self._settings
        # Complete: nothing left out, so that the caller may extend it by the next turn.
        # A snapshot at a limit may have been cut by it, so it does not count as complete.
        result.complete = (
            snapshot.complete
            and len(snapshot.newest_first) < settings.context_scan_limit
            and len(snapshot.facts) < settings.context_max_facts
            and len(result.messages) == len(snapshot.newest_first)
            and len(result.facts) == len(snapshot.facts)
            and result.summary == snapshot.summary.text
        )
        return result

    # ---- conversations -------------------------------------------------------------------

    async def GetConversation(
        self,
        request: MemoryGetConversationRequest,
        context: grpc.aio.ServicerContext[MemoryGetConversationRequest, Conversation],
    ) -> Conversation:
        await self._check_ids(
            context, tenant_id=request.tenant_id, conversation_id=request.conversation_id
        )
        doc = await self._call(
            context, self._store.conversation(request.tenant_id, request.conversation_id)
        )
        if doc is None:
            await _abort(context, grpc.StatusCode.NOT_FOUND, _not_found(request.conversation_id))
        messages = await self._call(
            context,
            self._store.messages(
                request.tenant_id,
                request.conversation_id,
                self._settings.conversation_max_messages,
            ),
        )
        conversation = Conversation(
            conversation_id=request.conversation_id,
            user_id=doc.get("user_id", ""),
            messages=[_message(m) for m in messages],
        )
        _set_times(conversation, doc)
        return conversation

    async def ListConversations(
        self,
        request: MemoryListConversationsRequest,
        context: grpc.aio.ServicerContext[
            MemoryListConversationsRequest, ListConversationsResponse
        ],
    ) -> ListConversationsResponse:
        await self._check_ids(context, tenant_id=request.tenant_id)
        if len(request.user_id) > 256:
            await _abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, "user_id is longer than 256 characters"
            )
        if request.page_size > self._settings.list_max_page_size:
            await _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"page_size must be at most {self._settings.list_max_page_size}; "
                f"got {request.page_size}",
            )
        page_size = request.page_size or self._settings.list_default_page_size
        after = None
        if request.page_token:
            try:
                after = PageToken.decode(request.page_token, request.user_id)
            except InvalidPageTokenError as exc:
                await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        docs = await self._call(
            context,
            self._store.list_conversations(
                request.tenant_id, request.user_id, page_size + 1, after
            ),
        )
        response = ListConversationsResponse()
        for doc in docs[:page_size]:
            item = ConversationSummary(
                conversation_id=doc["conversation_id"],
                user_id=doc.get("user_id", ""),
                message_count=doc.get("message_count", 0),
            )
            _set_times(item, doc)
            response.conversations.append(item)
        if len(docs) > page_size:
            last = docs[page_size - 1]
            response.next_page_token = PageToken.after(
                last["updated_at"], last["conversation_id"], request.user_id
            ).encode()
        return response

    async def DeleteConversation(
        self,
        request: MemoryDeleteConversationRequest,
        context: grpc.aio.ServicerContext[
            MemoryDeleteConversationRequest, DeleteConversationResponse
        ],
    ) -> DeleteConversationResponse:
        await self._check_ids(
            context, tenant_id=request.tenant_id, conversation_id=request.conversation_id
        )
        deleted = await self._call(
            context,
            self._store.delete_conversation(request.tenant_id, request.conversation_id),
        )
        self._cache.forget((request.tenant_id, request.conversation_id))
        if not deleted:
            await _abort(context, grpc.StatusCode.NOT_FOUND, _not_found(request.conversation_id))
        log.info("deleted conversation %s of %s", request.conversation_id, request.tenant_id)
        return DeleteConversationResponse()

    async def ExportConversation(
        self,
        request: MemoryExportConversationRequest,
        context: grpc.aio.ServicerContext[MemoryExportConversationRequest, ExportedConversation],
    ) -> ExportedConversation:
        await self._check_ids(
            context, tenant_id=request.tenant_id, conversation_id=request.conversation_id
        )
        exported = await self._call(
            context,
            self._store.export_conversation(
                request.tenant_id,
                request.conversation_id,
                self._settings.conversation_max_messages,
            ),
        )
        if exported is None:
            await _abort(context, grpc.StatusCode.NOT_FOUND, _not_found(request.conversation_id))
        return ExportedConversation(conversation_id=request.conversation_id, json=exported)

    # ---- feedback ------------------------------------------------------------------------

    async def SubmitFeedback(
        self,
        request: MemorySubmitFeedbackRequest,
        context: grpc.aio.ServicerContext[MemorySubmitFeedbackRequest, SubmitFeedbackResponse],
    ) -> SubmitFeedbackResponse:
        await self._check_ids(context, tenant_id=request.tenant_id, request_id=request.request_id)
        if request.rating == RATING_UNSPECIFIED or request.rating not in Rating.values():
            await _abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, "rating must be RATING_UP or RATING_DOWN"
            )
        limit = self._settings.feedback_max_comment_chars
        if len(request.comment) > limit:
            await _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"comment is longer than {limit} characters",
            )
        # The client hears `done` a moment before the turn reaches the store: a rating
        # sent at once waits (bounded) for its turn rather than failing.
        deadline = asyncio.get_running_loop().time() + self._settings.feedback_wait_s
        while True:
            recorded = await self._call(
                context,
                self._store.record_feedback(
                    request.tenant_id,
                    request.request_id,
                    request.rating,
                    request.comment,
                    request.user_id,
                ),
            )
            if recorded:
                return SubmitFeedbackResponse()
            if asyncio.get_running_loop().time() >= deadline:
                await _abort(
                    context,
                    grpc.StatusCode.NOT_FOUND,
                    f"no reply with request_id {request.request_id!r}",
                )
            await asyncio.sleep(FEEDBACK_POLL_S)

    # ---- helpers -------------------------------------------------------------------------

    async def _check_ids(self, context: Context, **ids: str) -> None:
        problem = _problem_with_ids(**ids)
        if problem:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, problem)

    async def _call(self, context: Context, operation: Awaitable[T]) -> T:
        try:
            return await operation
        except PyMongoError as exc:
            log.warning("store unavailable: %s", exc)
            await _abort(
                context,
                grpc.StatusCode.UNAVAILABLE,
                "the conversation store is unavailable; retry later",
            )


async def _abort(context: Context, code: grpc.StatusCode, details: str) -> NoReturn:
    """End the call with `code`; typed NoReturn so that the checker follows the flow."""
    await context.abort(code, details)
    raise AssertionError("abort returns only by raising")


def _message(doc: Document) -> Message:
    message = Message(
        role=doc["role"],
        text=doc["text"],
        model=doc.get("model", ""),
        request_id=doc["request_id"],
    )
    created_at: datetime | None = doc.get("created_at")
    if created_at is not None:
        message.created_at.FromDatetime(created_at)
    return message


def _set_times(target: Conversation | ConversationSummary, doc: Document) -> None:
    if doc.get("created_at") is not None:
        target.created_at.FromDatetime(doc["created_at"])
    if doc.get("updated_at") is not None:
        target.updated_at.FromDatetime(doc["updated_at"])
