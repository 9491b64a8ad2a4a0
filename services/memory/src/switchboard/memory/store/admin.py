"""Whole conversations: lookup, listing, export and deletion; feedback on replies; the
retention sweeper's queries."""

import json
from datetime import datetime

from pymongo import ASCENDING, DESCENDING

from switchboard.memory.paging import PageToken
from switchboard.memory.store.base import StoreBase, utcnow
from switchboard.memory.store.keys import Document, conversation_key, conversation_scope
from switchboard.v1.chat_pb2 import ROLE_ASSISTANT, ROLE_USER, Rating

ROLE_NAMES = {ROLE_USER: "user", ROLE_ASSISTANT: "assistant"}


class AdminStore(StoreBase):
    """Whole conversations, feedback and retention."""

    async def conversation(self, tenant_id: str, conversation_id: str) -> Document | None:
        """The conversation document, or None."""
        found = await self._conversation_by_key(tenant_id, conversation_id)
        if found is not None:
            return found
        # One stored before keys were derived: by its ids, a filter FerretDB evaluates over
        # every conversation, hence only after the key missed.
        return await self._conversations.find_one(conversation_scope(tenant_id, conversation_id))

    async def list_conversations(
        self, tenant_id: str, user_id: str, limit: int, after: PageToken | None
    ) -> list[Document]:
        """Conversations by last activity, newest first, starting after `after`."""
        query: Document = {"tenant_id": tenant_id}
        if user_id:
            query["user_id"] = user_id
        if after is not None:
            query["$or"] = [
                {"updated_at": {"$lt": after.updated_at}},
                {"updated_at": after.updated_at, "conversation_id": {"$lt": after.conversation_id}},
            ]
        return (
            await self._conversations.find(query, {"recent": 0, "known_facts": 0})
            .sort([("updated_at", DESCENDING), ("conversation_id", DESCENDING)])
            .limit(limit)
            .to_list()
        )

    async def delete_conversation(self, tenant_id: str, conversation_id: str) -> bool:
        """Hard-delete a conversation: messages, summaries, facts; False when unknown."""
        async with self._writing(tenant_id, conversation_id):
            scope = conversation_scope(tenant_id, conversation_id)
            if await self.conversation(tenant_id, conversation_id) is None:
                return False
            # The tombstone first: a turn written from now on sees it and takes itself out.
            await self._tombstones.update_one(
                {"_id": conversation_key(tenant_id, conversation_id)},
                {"$setOnInsert": scope, "$max": {"deleted_at": utcnow()}},
                upsert=True,
            )
            await self._messages.delete_many(scope)
            await self._summaries.delete_many(scope)
            await self._facts.delete_many(scope)
            await self._conversations.delete_one(scope)
            return True

    async def export_conversation(
        self, tenant_id: str, conversation_id: str, max_messages: int
    ) -> str | None:
        """The whole conversation as a JSON document, or None when unknown."""
        scope = conversation_scope(tenant_id, conversation_id)
        conversation = await self._conversations.find_one(scope)
        if conversation is None:
            return None
        messages = await self.messages(tenant_id, conversation_id, max_messages)
        summaries = await self._summaries.find(scope).sort("version", ASCENDING).to_list()
        facts = (
            await self._facts.find(scope)
            .sort([("position", ASCENDING), ("rank", ASCENDING)])
            .to_list()
        )
        document = {
            "tenant_id": tenant_id,
            "conversation_id": conversation_id,
            "user_id": conversation.get("user_id", ""),
            "created_at": _iso(conversation.get("created_at")),
            "updated_at": _iso(conversation.get("updated_at")),
            "message_count": conversation.get("message_count", len(messages)),
            "messages": [_exported_message(m) for m in messages],
            "summaries": [
                {
                    "version": s["version"],
                    "text": s["text"],
                    "covers_until_request_id": s["until_request_id"],
                    "covered_messages": s["covered_messages"],
                    "model": s.get("model", ""),
                    "created_at": _iso(s["created_at"]),
                }
                for s in summaries
            ],
            "facts": [
                {"kind": f["kind"], "value": f["value"], "request_id": f["request_id"]}
                for f in facts
            ],
            "exported_at": _iso(utcnow()),
        }
        return json.dumps(document, ensure_ascii=False)

    # ---- feedback ------------------------------------------------------------------------

    async def record_feedback(
        self, tenant_id: str, request_id: str, rating: Rating.ValueType, comment: str, user_id: str
    ) -> bool:
        """Attach a rating to the reply of `request_id` (the latest rating wins)."""
        result = await self._messages.update_one(
            {"tenant_id": tenant_id, "request_id": request_id, "role": ROLE_ASSISTANT},
            {
                "$set": {
                    "feedback": {
                        "rating": Rating.Name(rating),
                        "comment": comment,
                        "user_id": user_id,
                        "submitted_at": utcnow(),
                    }
                }
            },
        )
        return result.matched_count > 0

    # ---- retention -----------------------------------------------------------------------

    async def tenants_with_conversations(self) -> list[str]:
        """Every tenant that has a conversation (the retention sweeper's work list)."""
        return [str(t) for t in await self._conversations.distinct("tenant_id")]

    async def idle_conversations(
        self, tenant_id: str, idle_before: datetime, limit: int
    ) -> list[str]:
        """Conversations of a tenant with no activity since `idle_before`, oldest first."""
        docs = (
            await self._conversations.find(
                {"tenant_id": tenant_id, "updated_at": {"$lt": idle_before}},
                {"conversation_id": 1},
            )
            .sort("updated_at", ASCENDING)
            .limit(limit)
            .to_list()
        )
        return [d["conversation_id"] for d in docs]

    async def purge_tombstones(self, deleted_before: datetime) -> int:
        """Forget deletions older than `deleted_before`."""
        result = await self._tombstones.delete_many({"deleted_at": {"$lt": deleted_before}})
        return result.deleted_count


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value is not None else ""


def _exported_message(doc: Document) -> Document:
    exported: Document = {
        "request_id": doc["request_id"],
        "role": ROLE_NAMES.get(doc["role"], str(doc["role"])),
        "text": doc["text"],
        "created_at": _iso(doc.get("created_at")),
    }
    if doc["role"] == ROLE_ASSISTANT:
        for key in ("model", "tier", "finish_reason", "input_tokens", "output_tokens", "cost_usd"):
            if key in doc:
                exported[key] = doc[key]
    if "feedback" in doc:
        feedback = doc["feedback"]
        exported["feedback"] = {**feedback, "submitted_at": _iso(feedback.get("submitted_at"))}
    return exported
