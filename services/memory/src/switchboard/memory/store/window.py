"""What a conversation document keeps for the per-turn path: the packed window of newest
messages (one BSON binary FerretDB stores without decoding), the known facts and the summary
in use."""

from datetime import UTC
from typing import Any

import bson
from bson import Binary, CodecOptions

from switchboard.conversation.records import StoredMessage, SummaryState
from switchboard.memory.store.keys import Document
from switchboard.v1.memory_pb2 import Fact


def recent_doc(message: StoredMessage) -> Document:
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
    return Binary(bson.encode({"messages": [recent_doc(m) for m in messages]}))


def unpack_window(recent: Any) -> list[Document]:
    """The message documents of a stored `recent` field, packed or a plain array."""
    if isinstance(recent, bytes):  # Binary is a bytes subclass
        messages: list[Document] = bson.decode(recent, _WINDOW_CODEC)["messages"]
        return messages
    return list(recent)


def window_of(conversation: Document | None) -> list[StoredMessage] | None:
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
    return sorted((message_of(d) for d in unpack_window(recent)), key=lambda m: m.position)


def fact_doc(fact: Fact, position: int, rank: int) -> Document:
    return {
        "kind": fact.kind,
        "value": fact.value,
        "request_id": fact.request_id,
        "position": position,
        "rank": rank,
    }


def newest_facts(docs: list[Document], limit: int) -> list[Fact]:
    """The newest `limit` facts, oldest first (the order of statement)."""
    ordered = sorted(docs, key=lambda d: (d["position"], d["rank"]))[-limit:] if limit else []
    return [Fact(kind=d["kind"], value=d["value"], request_id=d["request_id"]) for d in ordered]


def window_after(
    message_count: int, window: list[StoredMessage] | None, after_position: int
) -> list[StoredMessage] | None:
    """The messages after `after_position`, oldest first, when `window` (of a conversation
    of `message_count` messages) holds them all; None when they must be read instead."""
    if window is None:
        return None
    if message_count > len(window) and not (window and window[0].position <= after_position):
        return None
    return [m for m in window if m.position > after_position]


def message_of(doc: Document) -> StoredMessage:
    """A stored message document as a `StoredMessage`."""
    return StoredMessage(
        position=doc["position"],
        request_id=doc["request_id"],
        role=doc["role"],
        text=doc["text"],
        created_at=doc["created_at"],
        model=doc.get("model", ""),
    )


def summary_of(doc: Document | None) -> SummaryState:
    """The summary in use on a conversation document."""
    summary = (doc or {}).get("summary")
    if not summary:
        return SummaryState()
    return SummaryState(
        summary["version"],
        summary["text"],
        summary["until_position"],
        summary.get("covered_messages", 0),
    )
