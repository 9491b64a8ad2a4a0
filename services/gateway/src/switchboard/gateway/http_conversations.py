"""`/v1/conversations`: create, read, list the items of and delete stored conversations."""

import time
import uuid
from typing import Any

import grpc
from aiohttp import web

from switchboard.gateway.conversations import ConversationMethods, id_problem
from switchboard.gateway.core import ChatCore, Refused
from switchboard.gateway.directory import DirectoryUnavailableError
from switchboard.gateway.http_auth import Caller, HttpAuth
from switchboard.gateway.http_common import CONVERSATION_HEADER, RefusingContext, read_json
from switchboard.gateway.openai_shapes import ApiError, invalid
from switchboard.v1.chat_pb2 import (
    ROLE_ASSISTANT,
    ROLE_USER,
    DeleteConversationRequest,
    GetConversationRequest,
)


def memory_methods(conversations: ConversationMethods | None) -> ConversationMethods:
    """The memory service's conversation calls; 501 when the gateway has none."""
    if conversations is None:
        raise ApiError(501, "conversation methods are not configured", type_="server_error")
    return conversations


class ConversationRoutes:
    """OpenAI's Conversations API over the memory service and the gateway's directory."""

    def __init__(
        self, core: ChatCore, auth: HttpAuth, conversations: ConversationMethods | None
    ) -> None:
        self._core = core
        self._auth = auth
        self._conversations = conversations

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/conversations", self._create_conversation)
        router.add_get("/v1/conversations/{id}", self._get_conversation)
        router.add_get("/v1/conversations/{id}/items", self._conversation_items)
        router.add_delete("/v1/conversations/{id}", self._delete_conversation)

    def _conversation_id(self, request: web.Request) -> str:
        conversation_id = request.match_info["id"]
        problem = id_problem("conversation_id", conversation_id)
        if problem:
            raise invalid("conversation_id", problem)
        return conversation_id

    async def _create_conversation(self, request: web.Request) -> web.Response:
        caller = await self._auth.caller(request, browser_ok=True)
        body = await read_json(request)
        if body.get("items"):
            raise invalid("items", "initial items are not supported; send them as turns")
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise invalid("metadata", "metadata must be an object of string values")
        conversation_id = str(uuid.uuid4())
        try:
            await self._core.directory.add(caller.tenant.tenant_id, conversation_id)
        except DirectoryUnavailableError as exc:
            raise ApiError(503, str(exc), type_="server_error", code="service_unavailable") from exc
        if caller.session is not None:
            await self._auth.session_call(
                self._auth.sessions.claim(caller.session, "conversation", conversation_id)
            )
        return web.json_response(
            {
                "id": conversation_id,
                "object": "conversation",
                "created_at": int(time.time()),
                "metadata": metadata,
            },
            headers={CONVERSATION_HEADER: conversation_id},
        )

    async def _read_conversation(self, caller: Caller, conversation_id: str) -> Any:
        """The stored conversation, or None for one started but with no stored turn yet."""
        await self._auth.require_own(caller, "conversation", conversation_id)
        try:
            return await memory_methods(self._conversations).get_conversation(
                caller.tenant.tenant_id,
                GetConversationRequest(conversation_id=conversation_id),
                RefusingContext(),
            )
        except Refused as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
            # Known to the gateway but not stored yet: created, or its first turn running.
            await self._core.require_conversation(caller.tenant, conversation_id)
            return None

    async def _get_conversation(self, request: web.Request) -> web.Response:
        caller = await self._auth.caller(request, browser_ok=True)
        conversation_id = self._conversation_id(request)
        stored = await self._read_conversation(caller, conversation_id)
        created = stored.created_at.seconds if stored is not None else int(time.time())
        metadata = {"user_id": stored.user_id} if stored is not None and stored.user_id else {}
        return web.json_response(
            {
                "id": conversation_id,
                "object": "conversation",
                "created_at": created,
                "metadata": metadata,
            }
        )

    async def _conversation_items(self, request: web.Request) -> web.Response:
        caller = await self._auth.caller(request, browser_ok=True)
        conversation_id = self._conversation_id(request)
        order = request.query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise invalid("order", "order must be asc or desc")
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            raise invalid("limit", "limit must be an integer") from None
        if not 1 <= limit <= 100:
            raise invalid("limit", "limit must be between 1 and 100")
        stored = await self._read_conversation(caller, conversation_id)
        items = []
        for index, message in enumerate(stored.messages if stored is not None else ()):
            if message.role not in (ROLE_USER, ROLE_ASSISTANT):
                continue
            user = message.role == ROLE_USER
            items.append(
                {
                    "id": f"msg_{index}",
                    "type": "message",
                    "status": "completed",
                    "role": "user" if user else "assistant",
                    "content": [
                        {"type": "input_text", "text": message.text}
                        if user
                        else {"type": "output_text", "text": message.text, "annotations": []}
                    ],
                    "switchboard": {"request_id": message.request_id, "model": message.model},
                }
            )
        if order == "desc":
            items.reverse()
        after = request.query.get("after")
        if after:
            ids = [item["id"] for item in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        page, more = items[:limit], len(items) > limit
        return web.json_response(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": more,
            }
        )

    async def _delete_conversation(self, request: web.Request) -> web.Response:
        caller = await self._auth.caller(request, browser_ok=False)
        conversation_id = self._conversation_id(request)
        try:
            await memory_methods(self._conversations).delete_conversation(
                caller.tenant.tenant_id,
                DeleteConversationRequest(conversation_id=conversation_id),
                RefusingContext(),
            )
        except Refused as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
            # Created over HTTP but never stored: forgetting it in the directory is the delete.
            await self._core.require_conversation(caller.tenant, conversation_id)
            await self._core.directory.remove(caller.tenant.tenant_id, conversation_id)
        return web.json_response(
            {"id": conversation_id, "object": "conversation.deleted", "deleted": True}
        )
