"""Turn writes: a turn's messages and facts, exactly once, and the conversation document in
step with them (activity, count, window, known facts)."""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError

from switchboard.conversation.facts import facts_of
from switchboard.conversation.records import StoredMessage, SummaryState, messages_of
from switchboard.memory.store.base import StoreBase, utcnow
from switchboard.memory.store.keys import (
    Document,
    conversation_key,
    conversation_scope,
    message_key,
)
from switchboard.memory.store.window import (
    fact_doc,
    message_of,
    pack_window,
    summary_of,
    window_after,
    window_of,
)
from switchboard.v1.chat_pb2 import ROLE_ASSISTANT
from switchboard.v1.events_pb2 import CompletedTurn
from switchboard.v1.memory_pb2 import Fact

log = logging.getLogger(__name__)


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


class TurnStore(StoreBase):
    """Turn writes."""

    async def save_turn(self, turn: CompletedTurn) -> SaveOutcome:
        """Store the messages and facts of a turn, exactly once."""
        return (await self.save_turn_with_state(turn)).outcome

    async def save_turn_with_state(self, turn: CompletedTurn) -> SavedTurn:
        """`save_turn`, also giving what a summary plan needs, as this write left it."""
        scope = conversation_scope(turn.tenant_id, turn.conversation_id)
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
                    "stored_at": utcnow(),
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
        window = window_of(conversation) if stored else None
        count = (conversation or {}).get("message_count", 0)
        if window is None:
            newest = await self.messages(turn.tenant_id, turn.conversation_id, self._recent_limit)
            count = await self._messages.count_documents(scope)
            fact_docs = await self._facts.find(scope).limit(self._facts_limit + 1).to_list()
            window = [message_of(d) for d in newest]
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
                    fact_doc(fact, position, rank)
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
        summary = summary_of(conversation)
        after = window_after(count, window, summary.until_position)
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
