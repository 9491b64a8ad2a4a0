"""Conversations in MongoDB through PyMongo's `AsyncMongoClient`.

The modules, by job: `keys` (document ids), `window` (the packed window of newest
messages, the known facts and the summary on a conversation document), `base` (the client,
collections, indexes and the write lock), `turns` (turn writes), `context` (context reads),
`summaries` (rolling summaries) and `admin` (listing, export, deletion, feedback, retention).

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

from switchboard.memory.store.admin import AdminStore
from switchboard.memory.store.base import WRITE_LOCK_STRIPES
from switchboard.memory.store.context import ContextStore
from switchboard.memory.store.keys import Document, conversation_key, message_key, summary_key
from switchboard.memory.store.summaries import SummaryStore
from switchboard.memory.store.turns import SavedTurn, SaveOutcome, TurnStore
from switchboard.memory.store.window import pack_window, unpack_window


class ConversationStore(TurnStore, ContextStore, SummaryStore, AdminStore):
    """The MongoDB adapter of the memory service."""


__all__ = [
    "WRITE_LOCK_STRIPES",
    "ConversationStore",
    "Document",
    "SaveOutcome",
    "SavedTurn",
    "conversation_key",
    "message_key",
    "pack_window",
    "summary_key",
    "unpack_window",
]
