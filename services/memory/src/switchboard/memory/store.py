"""Conversations in MongoDB through PyMongo's `AsyncMongoClient`.

Every document carries `tenant_id` and every query filters by it. Collections:
- `conversations`: one per (tenant, conversation): user, first and last activity, message
  count, the summary in use (`summary`), the summary task in flight (`summary_pending`) and
  the newest messages (`recent`, see below);
- `messages`: one per (tenant, conversation, request, role), the idempotency key, so a
  redelivered turn changes nothing; `position` orders them (see `records.position_of`);
  the assistant message of a turn carries the feedback on it;
- `summaries`: the newest versions of the rolling summary, each with the last message it
  covers;
- `facts`: key facts, one per (tenant, conversation, kind, value);
- `tombstones`: when a conversation was deleted, so that a late redelivery of one of its
  turns does not bring it back (a turn accepted after the deletion starts it afresh).

The per-turn path (store a turn, read a context, plan a summary) addresses documents by an
`_id` derived from the ids (`conversation_key`, `message_key`): FerretDB 1.x on SQLite hands
only an exact `_id` match to SQLite and decodes every document of the collection in Go for
any other filter (67 ms per query at 1,900 messages, against 0.7 ms by `_id`). For the same
reason the conversation document keeps its newest messages (`recent`, at most
`recent_limit`) and its facts (`known_facts`, while there are at most `facts_limit`), so
that a context is one read; `recent_count` is the `message_count` the
window was built for, and a window out of step with the count (two writers raced during a
rebalance, or a purge) is not trusted: reads fall back to the messages and the next turn
rebuilds it. On MongoDB the indexes serve either way.

The window is stored packed, as one BSON binary of its message documents (`pack_window`):
FerretDB decodes and re-encodes every nested field of a document on each read and update,
and forty nested messages made a conversation read cost 1.5 ms and an update 2.8 ms,
against 0.7 and 1.2 ms packed. A window stored as a plain array (before it was packed) is
still read.
"""

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

import bson
from bson import Binary, CodecOptions
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError

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

# Striped: a bounded number of locks, whatever the number of conversations.
WRITE_LOCK_STRIPES = 256

Document = dict[str, Any]
ROLE_NAMES = {ROLE_USER: "user", ROLE_ASSISTANT: "assistant"}


class SaveOutcome(Enum):
    """What became of a turn handed to `save_turn`."""

    STORED = "stored"
    # The conversation was deleted after this turn was accepted.
    DROPPED_DELETED = "dropped_deleted"


@dataclass(frozen=True)
class SavedTurn:
    """What `save_turn_with_state` did, and the conversation as it left it."""

    outcome: SaveOutcome
    # The summary in use, and every message after it (oldest first) when the window of
    # newest messages holds them all; None when they must be read from the store.
    summary: SummaryState | None = None
    unsummarised: tuple[StoredMessage, ...] | None = None


def _scope(tenant_id: str, conversation_id: str) -> Document:
    return {"tenant_id": tenant_id, "conversation_id": conversation_id}


def _derived_id(*parts: str | int) -> str:
    # A JSON array: unambiguous whatever the ids contain.
    return json.dumps(parts, separators=(",", ":"))


def conversation_key(tenant_id: str, conversation_id: str) -> str:
    """The `_id` of a conversation document (the tenant is part of it)."""
    return _derived_id(tenant_id, conversation_id)


def message_key(tenant_id: str, conversation_id: str, request_id: str, role: int) -> str:
    """The `_id` of a message document: one per (tenant, conversation, request, role)."""
    return _derived_id(tenant_id, conversation_id, request_id, role)


def summary_key(tenant_id: str, conversation_id: str, version: int) -> str:
    """The `_id` of a summary version."""
    return _derived_id(tenant_id, conversation_id, version)


def _recent_doc(message: StoredMessage) -> Document:
    return {
        "position": message.position,
        "request_id": message.request_id,
        "role": message.role,
        "text": message.text,
        "created_at": message.created_at,
        "model": message.model,
    }


# As the client reads documents (tz_aware), so that a packed window's times match.
_WINDOW_CODEC: CodecOptions[Document] = CodecOptions(tz_aware=True, tzinfo=UTC)


def pack_window(messages: list[StoredMessage]) -> Binary:
    """The `recent` field of a conversation: its window's message documents as one BSON
    binary, which FerretDB stores and returns without decoding it."""
    return Binary(bson.encode({"messages": [_recent_doc(m) for m in messages]}))


def unpack_window(recent: Any) -> list[Document]:
    """The message documents of a stored `recent` field, packed or a plain array."""
    if isinstance(recent, bytes):  # Binary is a bytes subclass
        messages: list[Document] = bson.decode(recent, _WINDOW_CODEC)["messages"]
        return messages
    return list(recent)


def _window(conversation: Document | None) -> list[StoredMessage] | None:
    """The newest messages kept on a conversation, oldest first; None when not trusted."""
    if conversation is None:
        return []
    recent = conversation.get("recent")
    if (
        recent is None
        or "known_facts_complete" not in conversation
        or conversation.get("recent_count") != conversation.get("message_count")
    ):
        return None
    return sorted((_message(d) for d in unpack_window(recent)), key=lambda m: m.position)


def _fact_doc(fact: Fact, position: int, rank: int) -> Document:
    return {
        "kind": fact.kind,
        "value": fact.value,
        "request_id": fact.request_id,
        "position": position,
        "rank": rank,
    }


def _newest_facts(docs: list[Document], limit: int) -> list[Fact]:
    """The newest `limit` facts, oldest first (the order of statement)."""
    ordered = sorted(docs, key=lambda d: (d["position"], d["rank"]))[-limit:] if limit else []
    return [Fact(kind=d["kind"], value=d["value"], request_id=d["request_id"]) for d in ordered]


async def _insert_new(collection: AsyncCollection[Document], docs: list[Document]) -> set[int]:
    """Insert `docs`, skipping those a unique index already holds; the indexes inserted.

    Inserts rather than upserts: on FerretDB 1.x an upsert scans the whole collection,
    while an insert only updates its indexes (which also reject the duplicates).
    """
    try:
        await collection.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != 11000 for e in errors):
            raise
        return set(range(len(docs))) - {int(e["index"]) for e in errors}
    return set(range(len(docs)))


def _window_after(
    message_count: int, window: list[StoredMessage] | None, after_position: int
) -> list[StoredMessage] | None:
    """The messages after `after_position`, oldest first, when `window` (of a conversation
    of `message_count` messages) holds them all; None when they must be read instead."""
    if window is None:
        return None
    if message_count > len(window) and not (window and window[0].position <= after_position):
        return None
    return [m for m in window if m.position > after_position]


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
    return SummaryState(
        summary["version"],
        summary["text"],
        summary["until_position"],
        summary.get("covered_messages", 0),
    )


class ConversationStore:
    """The MongoDB adapter of the memory service."""

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

    # ---- turns ---------------------------------------------------------------------------

    async def save_turn(self, turn: CompletedTurn) -> SaveOutcome:
        """Store the messages and facts of a turn, exactly once."""
        return (await self.save_turn_with_state(turn)).outcome

    async def save_turn_with_state(self, turn: CompletedTurn) -> SavedTurn:
        """`save_turn`, also giving what a summary plan needs, as this write left it."""
        scope = _scope(turn.tenant_id, turn.conversation_id)
        accepted = turn.accepted_at.ToDatetime(tzinfo=UTC)
        completed = turn.completed_at.ToDatetime(tzinfo=UTC)
        if await self._deleted_since(scope, accepted):
            return SavedTurn(SaveOutcome.DROPPED_DELETED)
        user, assistant = messages_of(turn)
        details = {
            "tier": turn.tier,
            "routing_reason": turn.routing_reason,
            "finish_reason": turn.finish_reason,
            "input_tokens": turn.usage.input_tokens,
            "output_tokens": turn.usage.output_tokens,
            "cost_usd": turn.cost_usd,
        }
        new_messages = await _insert_new(
            self._messages,
            [
                {
                    "_id": message_key(**scope, request_id=m.request_id, role=m.role),
                    **scope,
                    "request_id": m.request_id,
                    "role": m.role,
                    "text": m.text,
                    "position": m.position,
                    "created_at": m.created_at,
                    # When it became durable: completed-to-stored lag, for audits.
                    "stored_at": _now(),
                    "model": m.model,
                    **(details if m.role == ROLE_ASSISTANT else {}),
                }
                for m in (user, assistant)
            ],
        )
        stored = [m for i, m in enumerate((user, assistant)) if i in new_messages]
        facts = facts_of((user, assistant))
        if facts:
            await _insert_new(
                self._facts,
                [
                    {
                        **scope,
                        "kind": fact.kind,
                        "value": fact.value,
                        "request_id": fact.request_id,
                        "position": position,
                        # Keeps the order of facts stated in one message.
                        "rank": rank,
                        "created_at": accepted,
                    }
                    for rank, (fact, position) in enumerate(facts)
                ],
            )
        async with self._writing(turn.tenant_id, turn.conversation_id):
            state = await self._update_conversation(turn, scope, stored, facts, accepted, completed)
            if await self._deleted_since(scope, accepted):
                # Deleted while this turn was being written: take it out again.
                await self._purge_request(scope, turn.request_id)
                return SavedTurn(SaveOutcome.DROPPED_DELETED)
        return state

    async def _update_conversation(
        self,
        turn: CompletedTurn,
        scope: Document,
        stored: list[StoredMessage],
        facts: list[tuple[Fact, int]],
        accepted: datetime,
        completed: datetime,
    ) -> "SavedTurn":
        """Upsert the conversation: activity, message count and the window of newest
        messages, kept in step with the count (rebuilt from the messages when it is not)."""
        key = conversation_key(turn.tenant_id, turn.conversation_id)
        conversation = await self._conversations.find_one({"_id": key})
        update: Document = {
            "$setOnInsert": {**scope, "user_id": turn.user_id, "created_at": accepted},
            "$max": {"updated_at": completed},
        }
        # Nothing new inserted means a redelivery, maybe after the messages were written but
        # the conversation was not (MongoDB went away between): rebuild it from the messages.
        window = _window(conversation) if stored else None
        count = (conversation or {}).get("message_count", 0)
        if window is None:
            newest = await self.messages(turn.tenant_id, turn.conversation_id, self._recent_limit)
            count = await self._messages.count_documents(scope)
            fact_docs = await self._facts.find(scope).limit(self._facts_limit + 1).to_list()
            window = [_message(d) for d in newest]
            update["$set"] = {
                "message_count": count,
                "recent": pack_window(window),
                "recent_count": count,
                **self._known_facts(
                    [
                        {k: d[k] for k in ("kind", "value", "request_id", "position", "rank")}
                        for d in fact_docs
                    ]
                ),
            }
        else:  # a trusted window, and this write inserted messages
            count += len(stored)
            # Only messages this write inserted are new: none of them is in the window yet.
            window = sorted([*window, *stored], key=lambda m: m.position)[-self._recent_limit :]
            update["$inc"] = {"message_count": len(stored)}
            update["$set"] = {"recent": pack_window(window), "recent_count": count}
            previous = (conversation or {}).get("known_facts", [])
            if (conversation or {}).get("known_facts_complete", True):
                seen = {(d["kind"], d["value"]) for d in previous}
                added = [
                    _fact_doc(fact, position, rank)
                    for rank, (fact, position) in enumerate(facts)
                    if (fact.kind, fact.value) not in seen
                ]
                update["$set"].update(self._known_facts([*previous, *added]))
        try:
            await self._conversations.update_one({"_id": key}, update, upsert=True)
        except DuplicateKeyError:
            # A conversation stored before keys were derived: move it under its key.
            await self._rekey_conversation(scope, key)
            await self._conversations.update_one({"_id": key}, update, upsert=True)
            return SavedTurn(SaveOutcome.STORED)
        summary = _summary(conversation)
        after = _window_after(count, window, summary.until_position)
        return SavedTurn(SaveOutcome.STORED, summary, None if after is None else tuple(after))

    def _known_facts(self, docs: list[Document]) -> Document:
        """The conversation fields that keep its facts, or say there are too many to keep."""
        if len(docs) > self._facts_limit:
            return {"known_facts": [], "known_facts_complete": False}
        return {"known_facts": docs, "known_facts_complete": True}

    async def _rekey_conversation(self, scope: Document, key: str) -> None:
        old = await self._conversations.find_one(scope)
        if old is None or old["_id"] == key:
            return
        log.info("conversation %s moved under its derived key", scope["conversation_id"])
        await self._conversations.delete_one({"_id": old["_id"]})
        # Without a window: the next turn rebuilds it from the messages.
        old.pop("recent", None)
        await self._conversations.insert_one({**old, "_id": key})

    async def _deleted_since(self, scope: Document, moment: datetime) -> bool:
        key = conversation_key(scope["tenant_id"], scope["conversation_id"])
        tombstone = await self._tombstones.find_one({"_id": key})
        return tombstone is not None and moment <= tombstone["deleted_at"]

    async def _purge_request(self, scope: Document, request_id: str) -> None:
        await self._messages.delete_many({**scope, "request_id": request_id})
        await self._facts.delete_many({**scope, "request_id": request_id})
        remaining = await self._messages.count_documents(scope)
        if remaining == 0:
            await self._conversations.delete_one(scope)
        else:
            await self._conversations.update_one(
                scope,
                {
                    "$set": {"message_count": remaining},
                    "$unset": {"recent": "", "recent_count": "", "known_facts": ""},
                },
            )

    # ---- context -------------------------------------------------------------------------

    async def context_snapshot(
        self,
        tenant_id: str,
        conversation_id: str,
        scan_limit: int,
        max_facts: int,
        *,
        whole: bool = False,
    ) -> ContextSnapshot:
        """The summary in use, the newest facts and the newest unsummarised messages.

        When the conversation's window of newest messages does not reach back to the
        summary (a summary lags behind), only the window is read unless `whole` is set, and
        the snapshot says it is not `complete`: the window often fills a context already,
        while reading the rest makes FerretDB decode every message of the database.
        """
        scope = _scope(tenant_id, conversation_id)
        conversation = await self._conversation_by_key(tenant_id, conversation_id)
        if conversation is None:
            return ContextSnapshot()
        summary = _summary(conversation)
        window = _window(conversation)
        facts: list[Fact] = []
        if max_facts and window is not None and conversation["known_facts_complete"]:
            facts = _newest_facts(conversation["known_facts"], max_facts)
        elif max_facts:
            fact_docs = (
                await self._facts.find(scope)
                .sort([("position", DESCENDING), ("rank", DESCENDING)])
                .limit(max_facts)
                .to_list()
            )
            facts = _newest_facts(fact_docs, max_facts)
        after = _window_after(conversation["message_count"], window, summary.until_position)
        if after is not None:
            return ContextSnapshot(summary, tuple(facts), tuple(after[::-1][:scan_limit]))
        if window is not None and not whole:
            # The window does not reach back to the summary: all of it is unsummarised.
            return ContextSnapshot(
                summary, tuple(facts), tuple(window[::-1][:scan_limit]), len(window) >= scan_limit
            )
        docs = (
            await self._messages.find({**scope, "position": {"$gt": summary.until_position}})
            .sort("position", DESCENDING)
            .limit(scan_limit)
            .to_list()
        )
        return ContextSnapshot(summary, tuple(facts), tuple(_message(d) for d in docs))

    async def _conversation_by_key(self, tenant_id: str, conversation_id: str) -> Document | None:
        conversation = await self._conversations.find_one(
            {"_id": conversation_key(tenant_id, conversation_id)}
        )
        if conversation is None or conversation.get("tenant_id") != tenant_id:
            return None  # the key holds the tenant; checked again all the same
        return conversation

    # ---- rolling summaries ---------------------------------------------------------------

    async def summary_state(self, tenant_id: str, conversation_id: str) -> SummaryState:
        """The summary in use (version 0 with no text when there is none yet)."""
        return _summary(await self._conversation_by_key(tenant_id, conversation_id))

    async def unsummarised(
        self, tenant_id: str, conversation_id: str, after_position: int, limit: int
    ) -> list[StoredMessage]:
        """The oldest `limit` messages after `after_position`, oldest first."""
        conversation = await self._conversation_by_key(tenant_id, conversation_id)
        if conversation is None:
            return []
        after = _window_after(conversation["message_count"], _window(conversation), after_position)
        if after is not None:
            return after[:limit]
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
        async with self._writing(tenant_id, conversation_id):
            # Checked here and written by key, under the conversation's write lock: a
            # conditional filter would make FerretDB 1.x decode every conversation.
            conversation = await self._conversation_by_key(tenant_id, conversation_id)
            if conversation is None:
                return False
            now = _now()
            # Only on the summary the plan was made from: a version stored meanwhile makes the
            # plan stale (it would fold messages already covered into a duplicate version).
            if _summary(conversation).version != base.version:
                return False
            pending = conversation.get("summary_pending")
            if not (
                pending is None
                or pending.get("task_id") == task_id
                or pending["requested_at"] < now - timedelta(seconds=stale_after_s)
            ):
                return False
            await self._conversations.update_one(
                {"_id": conversation["_id"]},
                {
                    "$set": {
                        "summary_pending": {
                            "task_id": task_id,
                            "base_version": base.version,
                            "until_position": plan.last.position,
                            "until_request_id": plan.last.request_id,
                            # The plan folds in every message after the base's coverage:
                            # counted here, as counting them later scans the messages.
                            "covered_messages": base.covered_messages + len(plan.messages),
                            "until_role": plan.last.role,
                            "requested_at": now,
                        }
                    }
                },
            )
            return True

    async def release_summary(self, tenant_id: str, conversation_id: str, task_id: str) -> None:
        """Forget an in-flight summary task (it failed or could not be sent)."""
        async with self._writing(tenant_id, conversation_id):
            await self._release(tenant_id, conversation_id, task_id)

    async def _release(self, tenant_id: str, conversation_id: str, task_id: str) -> None:
        conversation = await self._conversation_by_key(tenant_id, conversation_id)
        if conversation is None:
            return
        pending = conversation.get("summary_pending")
        if pending is not None and pending["task_id"] == task_id:
            await self._conversations.update_one(
                {"_id": conversation["_id"]}, {"$unset": {"summary_pending": ""}}
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
        async with self._writing(tenant_id, conversation_id):
            scope = _scope(tenant_id, conversation_id)
            conversation = await self._conversation_by_key(tenant_id, conversation_id)
            if conversation is None:
                return None
            pending = conversation.get("summary_pending")
            if pending is None or pending.get("task_id") != task_id:
                return None
            version = int(pending["base_version"]) + 1
            until = int(pending["until_position"])
            now = _now()
            covered = pending.get("covered_messages")
            if covered is None:  # claimed before the count was kept with the claim
                covered = await self._messages.count_documents(
                    {**scope, "position": {"$lte": until}}
                )
            try:
                await self._summaries.insert_one(
                    {
                        "_id": summary_key(tenant_id, conversation_id, version),
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
                existing = await self._summaries.find_one(
                    {"_id": summary_key(tenant_id, conversation_id, version)}
                )
                if existing is None or existing.get("task_id") != task_id:
                    # Another task wrote this version: this result is stale.
                    await self._release(tenant_id, conversation_id, task_id)
                    return None
                # A redelivered result: the version is stored already; finish the bookkeeping.
            # By key: the pending task was checked above, under the write lock.
            await self._conversations.update_one(
                {"_id": conversation["_id"]},
                {
                    "$set": {
                        "summary": {
                            "version": version,
                            "text": text,
                            "until_position": until,
                            "until_request_id": pending["until_request_id"],
                            "covered_messages": covered,
                            "created_at": now,
                        }
                    },
                    "$unset": {"summary_pending": ""},
                },
            )
            if version > versions_kept:
                # Each version stored retires one, so `versions_kept` remain.
                await self._summaries.delete_one(
                    {"_id": summary_key(tenant_id, conversation_id, version - versions_kept)}
                )
            if await self._deleted_since(scope, pending["requested_at"]):
                await self._summaries.delete_many(scope)
                return None
            return version

    # ---- whole conversations -------------------------------------------------------------

    async def conversation(self, tenant_id: str, conversation_id: str) -> Document | None:
        """The conversation document, or None."""
        found = await self._conversation_by_key(tenant_id, conversation_id)
        if found is not None:
            return found
        # One stored before keys were derived: by its ids, a filter FerretDB evaluates over
        # every conversation, hence only after the key missed.
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
            await self._conversations.find(query, {"recent": 0, "known_facts": 0})
            .sort([("updated_at", DESCENDING), ("conversation_id", DESCENDING)])
            .limit(limit)
            .to_list()
        )

    async def delete_conversation(self, tenant_id: str, conversation_id: str) -> bool:
        """Hard-delete a conversation: messages, summaries, facts; False when unknown."""
        async with self._writing(tenant_id, conversation_id):
            scope = _scope(tenant_id, conversation_id)
            if await self.conversation(tenant_id, conversation_id) is None:
                return False
            # The tombstone first: a turn written from now on sees it and takes itself out.
            await self._tombstones.update_one(
                {"_id": conversation_key(tenant_id, conversation_id)},
                {"$setOnInsert": scope, "$max": {"deleted_at": _now()}},
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
