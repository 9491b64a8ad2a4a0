"""Conversations in MongoDB through PyMongo's `AsyncMongoClient`.

Every document carries `tenant_id` and every query filters by it. Collections:
- `conversations`: one per (tenant, conversation): user, first and last activity, message
  count, the summary in use (`summary`) and the summary task in flight (`summary_pending`);
- `messages`: one per (tenant, conversation, request, role), the idempotency key, so a
  redelivered turn changes nothing; `position` orders them (see `records.position_of`);
  the assistant message of a turn carries the feedback on it;
- `summaries`: the newest versions of the rolling summary, each with the last message it
  covers;
- `facts`: key facts, one per (tenant, conversation, kind, value);
- `tombstones`: when a conversation was deleted, so that a late redelivery of one of its
  turns does not bring it back (a turn accepted after the deletion starts it afresh).
"""

import json
import logging
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from switchboard.memory.facts import facts_of
from switchboard.memory.paging import PageToken
from switchboard.memory.records import (
    ContextSnapshot,
    StoredMessage,
    SummaryState,
    messages_of,
)
from switchboard.memory.summaries import SummaryPlan
from switchboard.v1.chat_pb2 import ROLE_ASSISTANT, ROLE_USER, Rating
from switchboard.v1.events_pb2 import CompletedTurn
from switchboard.v1.memory_pb2 import Fact

log = logging.getLogger(__name__)

Document = dict[str, Any]
ROLE_NAMES = {ROLE_USER: "user", ROLE_ASSISTANT: "assistant"}


class SaveOutcome(Enum):
    """What became of a turn handed to `save_turn`."""

    STORED = "stored"
    # The conversation was deleted after this turn was accepted.
    DROPPED_DELETED = "dropped_deleted"


def _scope(tenant_id: str, conversation_id: str) -> Document:
    return {"tenant_id": tenant_id, "conversation_id": conversation_id}


def _now() -> datetime:
    return datetime.now(UTC)


def _message(doc: Document) -> StoredMessage:
    return StoredMessage(
        position=doc["position"],
        request_id=doc["request_id"],
        role=doc["role"],
        text=doc["text"],
        created_at=doc["created_at"],
        model=doc.get("model", ""),
    )


def _summary(doc: Document | None) -> SummaryState:
    summary = (doc or {}).get("summary")
    if not summary:
        return SummaryState()
    return SummaryState(summary["version"], summary["text"], summary["until_position"])


class ConversationStore:
    """The MongoDB adapter of the memory service."""

    def __init__(self, url: str, database: str, timeout_ms: int) -> None:
        self.client: AsyncMongoClient[Document] = AsyncMongoClient(
            url,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            socketTimeoutMS=timeout_ms,
            tz_aware=True,
        )
        self.database = database
        db = self.client[database]
        self._conversations: AsyncCollection[Document] = db["conversations"]
        self._messages: AsyncCollection[Document] = db["messages"]
        self._summaries: AsyncCollection[Document] = db["summaries"]
        self._facts: AsyncCollection[Document] = db["facts"]
        self._tombstones: AsyncCollection[Document] = db["tombstones"]

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

    # ---- turns ---------------------------------------------------------------------------

    async def save_turn(self, turn: CompletedTurn) -> SaveOutcome:
        """Store the messages and facts of a turn, exactly once."""
        scope = _scope(turn.tenant_id, turn.conversation_id)
        accepted = turn.accepted_at.ToDatetime(tzinfo=UTC)
        completed = turn.completed_at.ToDatetime(tzinfo=UTC)
        if await self._deleted_since(scope, accepted):
            return SaveOutcome.DROPPED_DELETED
        user, assistant = messages_of(turn)
        details = {
            "tier": turn.tier,
            "routing_reason": turn.routing_reason,
            "finish_reason": turn.finish_reason,
            "input_tokens": turn.usage.input_tokens,
            "output_tokens": turn.usage.output_tokens,
            "cost_usd": turn.cost_usd,
        }
        await self._messages.bulk_write(
            [
                UpdateOne(
                    {**scope, "request_id": m.request_id, "role": m.role},
                    {
                        "$setOnInsert": {
                            "text": m.text,
                            "position": m.position,
                            "created_at": m.created_at,
                            # When it became durable: completed-to-stored lag, for audits.
                            "stored_at": _now(),
                            "model": m.model,
                            **(details if m.role == ROLE_ASSISTANT else {}),
                        }
                    },
                    upsert=True,
                )
                for m in (user, assistant)
            ]
        )
        facts = facts_of((user, assistant))
        if facts:
            await self._facts.bulk_write(
                [
                    UpdateOne(
                        {**scope, "kind": fact.kind, "value": fact.value},
                        {
                            "$setOnInsert": {
                                "request_id": fact.request_id,
                                "position": position,
                                # Keeps the order of facts stated in one message.
                                "rank": rank,
                                "created_at": accepted,
                            }
                        },
                        upsert=True,
                    )
                    for rank, (fact, position) in enumerate(facts)
                ]
            )
        # Counting instead of incrementing keeps the count right however often a turn
        # is redelivered.
        count = await self._messages.count_documents(scope)
        await self._conversations.update_one(
            scope,
            {
                "$setOnInsert": {"user_id": turn.user_id, "created_at": accepted},
                "$max": {"updated_at": completed},
                "$set": {"message_count": count},
            },
            upsert=True,
        )
        if await self._deleted_since(scope, accepted):
            # Deleted while this turn was being written: take it out again.
            await self._purge_request(scope, turn.request_id)
            return SaveOutcome.DROPPED_DELETED
        return SaveOutcome.STORED

    async def _deleted_since(self, scope: Document, moment: datetime) -> bool:
        tombstone = await self._tombstones.find_one(scope)
        return tombstone is not None and moment <= tombstone["deleted_at"]

    async def _purge_request(self, scope: Document, request_id: str) -> None:
        await self._messages.delete_many({**scope, "request_id": request_id})
        await self._facts.delete_many({**scope, "request_id": request_id})
        remaining = await self._messages.count_documents(scope)
        if remaining == 0:
            await self._conversations.delete_one(scope)
        else:
            await self._conversations.update_one(scope, {"$set": {"message_count": remaining}})

    # ---- context -------------------------------------------------------------------------

    async def context_snapshot(
        self, tenant_id: str, conversation_id: str, scan_limit: int, max_facts: int
    ) -> ContextSnapshot:
        """The summary in use, the newest facts and the newest unsummarised messages."""
        scope = _scope(tenant_id, conversation_id)
        summary = _summary(await self._conversations.find_one(scope, {"summary": 1}))
        facts: list[Fact] = []
        if max_facts:
            docs = (
                await self._facts.find(scope)
                .sort([("position", DESCENDING), ("rank", DESCENDING)])
                .limit(max_facts)
                .to_list()
            )
            facts = [
                Fact(kind=d["kind"], value=d["value"], request_id=d["request_id"])
                for d in reversed(docs)
            ]
        messages = (
            await self._messages.find({**scope, "position": {"$gt": summary.until_position}})
            .sort("position", DESCENDING)
            .limit(scan_limit)
            .to_list()
        )
        return ContextSnapshot(summary, tuple(facts), tuple(_message(d) for d in messages))

    # ---- rolling summaries ---------------------------------------------------------------

    async def summary_state(self, tenant_id: str, conversation_id: str) -> SummaryState:
        """The summary in use (version 0 with no text when there is none yet)."""
        return _summary(
            await self._conversations.find_one(_scope(tenant_id, conversation_id), {"summary": 1})
        )

    async def unsummarised(
        self, tenant_id: str, conversation_id: str, after_position: int, limit: int
    ) -> list[StoredMessage]:
        """The oldest `limit` messages after `after_position`, oldest first."""
        docs = (
            await self._messages.find(
                {**_scope(tenant_id, conversation_id), "position": {"$gt": after_position}}
            )
            .sort("position", ASCENDING)
            .limit(limit)
            .to_list()
        )
        return [_message(d) for d in docs]

    async def claim_summary(
        self,
        tenant_id: str,
        conversation_id: str,
        task_id: str,
        base: SummaryState,
        plan: SummaryPlan,
        stale_after_s: float,
    ) -> bool:
        """Record a summary task as in flight; False when another one (not stale) is.

        Claiming again with the same `task_id` succeeds: a turn whose first attempt claimed
        but failed before (or while) sending the task can send it again.
        """
        now = _now()
        # Only on the summary the plan was made from: a version stored meanwhile makes the
        # plan stale (it would fold messages already covered into a duplicate version).
        base_filter: Document = (
            {"summary.version": base.version} if base.version else {"summary": {"$exists": False}}
        )
        claimed = await self._conversations.find_one_and_update(
            {
                **_scope(tenant_id, conversation_id),
                **base_filter,
                "$or": [
                    {"summary_pending": {"$exists": False}},
                    {"summary_pending.task_id": task_id},
                    {
                        "summary_pending.requested_at": {
                            "$lt": now - timedelta(seconds=stale_after_s)
                        }
                    },
                ],
            },
            {
                "$set": {
                    "summary_pending": {
                        "task_id": task_id,
                        "base_version": base.version,
                        "until_position": plan.last.position,
                        "until_request_id": plan.last.request_id,
                        "until_role": plan.last.role,
                        "requested_at": now,
                    }
                }
            },
            # No projection: FerretDB 1.x does not implement `fields` in findAndModify.
        )
        return claimed is not None

    async def release_summary(self, tenant_id: str, conversation_id: str, task_id: str) -> None:
        """Forget an in-flight summary task (it failed or could not be sent)."""
        await self._conversations.update_one(
            {**_scope(tenant_id, conversation_id), "summary_pending.task_id": task_id},
            {"$unset": {"summary_pending": ""}},
        )

    async def save_summary(
        self,
        tenant_id: str,
        conversation_id: str,
        task_id: str,
        text: str,
        versions_kept: int,
        usage: Document | None = None,
    ) -> int | None:
        """Store the result of a summary task as the next version; None when the task is
        unknown (stale, already stored, or its conversation was deleted)."""
        scope = _scope(tenant_id, conversation_id)
        conversation = await self._conversations.find_one(
            {**scope, "summary_pending.task_id": task_id}, {"summary_pending": 1}
        )
        if conversation is None:
            return None
        pending = conversation["summary_pending"]
        version = int(pending["base_version"]) + 1
        until = int(pending["until_position"])
        now = _now()
        covered = await self._messages.count_documents({**scope, "position": {"$lte": until}})
        try:
            await self._summaries.insert_one(
                {
                    **scope,
                    "version": version,
                    "text": text,
                    "until_position": until,
                    "until_request_id": pending["until_request_id"],
                    "until_role": pending["until_role"],
                    "covered_messages": covered,
                    "task_id": task_id,
                    # Model, tokens and cost of the summary call, for cost reports.
                    **(usage or {}),
                    "created_at": now,
                }
            )
        except DuplicateKeyError:
            existing = await self._summaries.find_one({**scope, "version": version})
            if existing is None or existing.get("task_id") != task_id:
                # Another task wrote this version: this result is stale.
                await self.release_summary(tenant_id, conversation_id, task_id)
                return None
            # A redelivered result: the version is stored already; finish the bookkeeping.
        await self._conversations.update_one(
            {**scope, "summary_pending.task_id": task_id},
            {
                "$set": {
                    "summary": {
                        "version": version,
                        "text": text,
                        "until_position": until,
                        "until_request_id": pending["until_request_id"],
                        "created_at": now,
                    }
                },
                "$unset": {"summary_pending": ""},
            },
        )
        await self._summaries.delete_many({**scope, "version": {"$lte": version - versions_kept}})
        if await self._deleted_since(scope, pending["requested_at"]):
            await self._summaries.delete_many(scope)
            return None
        return version

    # ---- whole conversations -------------------------------------------------------------

    async def conversation(self, tenant_id: str, conversation_id: str) -> Document | None:
        """The conversation document, or None."""
        return await self._conversations.find_one(_scope(tenant_id, conversation_id))

    async def messages(self, tenant_id: str, conversation_id: str, limit: int) -> list[Document]:
        """The newest `limit` message documents, oldest first."""
        docs = (
            await self._messages.find(_scope(tenant_id, conversation_id))
            .sort("position", DESCENDING)
            .limit(limit)
            .to_list()
        )
        docs.reverse()
        return docs

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
            await self._conversations.find(query)
            .sort([("updated_at", DESCENDING), ("conversation_id", DESCENDING)])
            .limit(limit)
            .to_list()
        )

    async def delete_conversation(self, tenant_id: str, conversation_id: str) -> bool:
        """Hard-delete a conversation: messages, summaries, facts; False when unknown."""
        scope = _scope(tenant_id, conversation_id)
        if await self._conversations.find_one(scope, {"_id": 1}) is None:
            return False
        # The tombstone first: a turn written from now on sees it and takes itself out.
        await self._tombstones.update_one(scope, {"$max": {"deleted_at": _now()}}, upsert=True)
        await self._messages.delete_many(scope)
        await self._summaries.delete_many(scope)
        await self._facts.delete_many(scope)
        await self._conversations.delete_one(scope)
        return True

    async def export_conversation(
        self, tenant_id: str, conversation_id: str, max_messages: int
    ) -> str | None:
        """The whole conversation as a JSON document, or None when unknown."""
        scope = _scope(tenant_id, conversation_id)
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
            "exported_at": _iso(_now()),
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
                        "submitted_at": _now(),
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

    async def close(self) -> None:
        """Close the client."""
        await self.client.close()


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
