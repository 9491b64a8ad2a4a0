"""The client, collections, indexes and per-conversation write lock every part of the
store shares, and the reads they all use."""

import asyncio
from datetime import UTC, datetime

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from switchboard.memory.store.keys import Document, conversation_key, conversation_scope

# Striped: a bounded number of locks, whatever the number of conversations.
WRITE_LOCK_STRIPES = 256


def utcnow() -> datetime:
    """The time documents are stamped with."""
    return datetime.now(UTC)


class StoreBase:
    """What every part of `ConversationStore` shares."""

    def __init__(
        self,
        url: str,
        database: str,
        timeout_ms: int,
        recent_limit: int = 40,
        facts_limit: int = 100,
    ) -> None:
        self.client: AsyncMongoClient[Document] = AsyncMongoClient(
            url,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            socketTimeoutMS=timeout_ms,
            tz_aware=True,
        )
        self.database = database
        self._recent_limit = recent_limit
        self._facts_limit = facts_limit
        self._locks = [asyncio.Lock() for _ in range(WRITE_LOCK_STRIPES)]
        db = self.client[database]
        self._conversations: AsyncCollection[Document] = db["conversations"]
        self._messages: AsyncCollection[Document] = db["messages"]
        self._summaries: AsyncCollection[Document] = db["summaries"]
        self._facts: AsyncCollection[Document] = db["facts"]
        self._tombstones: AsyncCollection[Document] = db["tombstones"]

    def _writing(self, tenant_id: str, conversation_id: str) -> asyncio.Lock:
        """The lock every write to a conversation document in this process holds.

        FerretDB 1.x applies an update by reading the document and writing all of it back,
        outside any transaction: two updates of one conversation at once (a turn and a
        summary result, consumed side by side) lost one of them, e.g. a stored summary.
        MongoDB needs no lock; with FerretDB, run one memory process per database.
        """
        stripe = hash((tenant_id, conversation_id)) % len(self._locks)
        return self._locks[stripe]

    async def ensure_indexes(self) -> None:
        """Create the indexes the queries and the idempotent writes rely on.

        No TTL index: FerretDB 1.x answers `expireAfterSeconds` with NotImplemented, and a
        TTL cannot remove a conversation's messages with it nor follow a tenant's retention
        when it changes; the retention sweeper does both on every server.
        """
        tenant, conversation = ("tenant_id", ASCENDING), ("conversation_id", ASCENDING)
        await self._conversations.create_index(
            [tenant, conversation], unique=True, name="tenant_conversation"
        )
        await self._conversations.create_index(
            [tenant, ("user_id", ASCENDING), ("updated_at", DESCENDING), conversation],
            name="tenant_user_listing",
        )
        await self._conversations.create_index(
            [tenant, ("updated_at", DESCENDING), conversation], name="tenant_listing"
        )
        await self._messages.create_index(
            [tenant, conversation, ("request_id", ASCENDING), ("role", ASCENDING)],
            unique=True,
            name="turn_message",
        )
        await self._messages.create_index(
            [tenant, conversation, ("position", DESCENDING)], name="conversation_positions"
        )
        await self._messages.create_index(
            [tenant, ("request_id", ASCENDING), ("role", ASCENDING)], name="tenant_request"
        )
        await self._summaries.create_index(
            [tenant, conversation, ("version", DESCENDING)], unique=True, name="summary_version"
        )
        await self._facts.create_index(
            [tenant, conversation, ("kind", ASCENDING), ("value", ASCENDING)],
            unique=True,
            name="conversation_fact",
        )
        await self._facts.create_index(
            [tenant, conversation, ("position", DESCENDING)], name="fact_positions"
        )
        await self._tombstones.create_index(
            [tenant, conversation], unique=True, name="tenant_conversation"
        )
        await self._tombstones.create_index([("deleted_at", ASCENDING)], name="deleted_at")

    async def _deleted_since(self, scope: Document, moment: datetime) -> bool:
        key = conversation_key(scope["tenant_id"], scope["conversation_id"])
        tombstone = await self._tombstones.find_one({"_id": key})
        return tombstone is not None and moment <= tombstone["deleted_at"]

    async def _conversation_by_key(self, tenant_id: str, conversation_id: str) -> Document | None:
        conversation = await self._conversations.find_one(
            {"_id": conversation_key(tenant_id, conversation_id)}
        )
        if conversation is None or conversation.get("tenant_id") != tenant_id:
            return None  # the key holds the tenant; checked again all the same
        return conversation

    async def messages(self, tenant_id: str, conversation_id: str, limit: int) -> list[Document]:
        """The newest `limit` message documents, oldest first."""
        docs = (
            await self._messages.find(conversation_scope(tenant_id, conversation_id))
            .sort("position", DESCENDING)
            .limit(limit)
            .to_list()
        )
        docs.reverse()
        return docs

    async def close(self) -> None:
        """Close the client."""
        await self.client.close()
