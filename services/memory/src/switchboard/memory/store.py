"""Conversations and messages in MongoDB through PyMongo's `AsyncMongoClient`.

Every document carries `tenant_id` and every query filters by it. Writes are upserts
keyed by (tenant, conversation, request, role), so a redelivered turn changes nothing.
"""

from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from switchboard.v1.chat_pb2 import ROLE_ASSISTANT, ROLE_USER, Message
from switchboard.v1.events_pb2 import CompletedTurn

Document = dict[str, Any]


class ConversationStore:
    """The MongoDB adapter of the memory service."""

    def __init__(self, url: str, database: str, timeout_ms: int) -> None:
        self._client: AsyncMongoClient[Document] = AsyncMongoClient(
            url,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            socketTimeoutMS=timeout_ms,
            tz_aware=True,
        )
        db = self._client[database]
        self._conversations: AsyncCollection[Document] = db["conversations"]
        self._messages: AsyncCollection[Document] = db["messages"]

    async def ensure_indexes(self) -> None:
        """Create the indexes the queries and the idempotent writes rely on."""
        await self._conversations.create_index(
            [("tenant_id", ASCENDING), ("conversation_id", ASCENDING)],
            unique=True,
            name="tenant_conversation",
        )
        await self._conversations.create_index(
            [("tenant_id", ASCENDING), ("user_id", ASCENDING), ("updated_at", DESCENDING)],
            name="tenant_user_recent",
        )
        await self._messages.create_index(
            [
                ("tenant_id", ASCENDING),
                ("conversation_id", ASCENDING),
                ("request_id", ASCENDING),
                ("role", ASCENDING),
            ],
            unique=True,
            name="turn_message",
        )
        await self._messages.create_index(
            [("tenant_id", ASCENDING), ("conversation_id", ASCENDING), ("created_at", DESCENDING)],
            name="conversation_timeline",
        )

    async def save_turn(self, turn: CompletedTurn) -> None:
        """Store the user and assistant messages of a turn, exactly once."""
        accepted = turn.accepted_at.ToDatetime(tzinfo=UTC)
        completed = turn.completed_at.ToDatetime(tzinfo=UTC)
        scope = {"tenant_id": turn.tenant_id, "conversation_id": turn.conversation_id}
        for role, text, created_at, extra in (
            (ROLE_USER, turn.user_message, accepted, {}),
            (
                ROLE_ASSISTANT,
                turn.assistant_message,
                completed,
                {
                    "model": turn.model,
                    "tier": turn.tier,
                    "routing_reason": turn.routing_reason,
                    "finish_reason": turn.finish_reason,
                    "input_tokens": turn.usage.input_tokens,
                    "output_tokens": turn.usage.output_tokens,
                    "cost_usd": turn.cost_usd,
                },
            ),
        ):
            await self._messages.update_one(
                {**scope, "request_id": turn.request_id, "role": role},
                {"$setOnInsert": {"text": text, "created_at": created_at, **extra}},
                upsert=True,
            )
        await self._conversations.update_one(
            scope,
            {
                "$setOnInsert": {"user_id": turn.user_id, "created_at": accepted},
                "$max": {"updated_at": completed},
            },
            upsert=True,
        )

    async def newest_messages(
        self, tenant_id: str, conversation_id: str, limit: int
    ) -> list[Message]:
        """The newest `limit` messages of a conversation, newest first."""
        cursor = (
            self._messages.find({"tenant_id": tenant_id, "conversation_id": conversation_id})
            .sort([("created_at", DESCENDING), ("role", DESCENDING)])
            .limit(limit)
        )
        return [_to_message(doc) async for doc in cursor]

    async def close(self) -> None:
        """Close the client."""
        await self._client.close()


def _to_message(doc: Document) -> Message:
    message = Message(
        role=doc["role"],
        text=doc["text"],
        model=doc.get("model", ""),
        request_id=doc["request_id"],
    )
    created_at: datetime = doc["created_at"]
    message.created_at.FromDatetime(created_at)
    return message
