"""The next turn's context, ready when it arrives: extended here, or read ahead (decision 0084).

A conversation's turns run one at a time (the gateway's lock), and while this orchestrator
owns the conversation's `chat.requests` partition, each of them starts here. So when turn N
ran here with a complete context C (memory's word: nothing left out), and N's record was
published from here, the next turn's context is C plus N's two messages and the facts they
state: what memory answers once N is stored, without the read, and with nothing to wait for.
When the extension would leave something out or pass a limit (or C was not complete), the
next turn's context is read from memory at once instead, with N attached (memory may not
have received N yet), while the client is still hearing N's end.

Each conversation's entry moves through three states, and anything unexpected drops it, so
that the next turn reads memory on arrival as before:
- `take` (a turn arrives): hands out what the previous turn left (the extended context, or
  the read under way), and leaves a mark for the arriving turn;
- `started` (the turn has its context): the mark takes the context;
- `completed` (its record is published): the context is extended by the record, or the read
  ahead starts.
A redelivered turn, a turn whose result another replica handled and a rebalance (`clear`:
every entry goes) all end in a read on arrival. The entries are bounded in bytes, in number
and in age; a read ahead is bounded by memory's timeout.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NamedTuple

from cachetools import TTLCache

from switchboard.conversation.facts import facts_of
from switchboard.conversation.records import messages_of
from switchboard.conversation.tokens import CountTokens
from switchboard.conversation.window import (
    FACT_OVERHEAD_TOKENS,
    PER_MESSAGE_OVERHEAD_TOKENS,
    fact_line,
)
from switchboard.orchestrator.settings import ContextReuseSettings
from switchboard.v1.events_pb2 import CompletedTurn, TurnRequest
from switchboard.v1.memory_pb2 import ConversationContext

Key = tuple[str, str]

# What an entry costs beyond its context's encoded size (objects, key): an estimate.
ENTRY_OVERHEAD_BYTES = 300


@dataclass
class _Entry:
    # The turn that took the entry: the one whose context it holds, or holds next.
    request_id: str
    context: ConversationContext | None = None
    # True once that turn's record was published: the entry is the next turn's.
    completed: bool = False
    # The next turn's context being read from memory (when it could not be extended).
    reading: "asyncio.Future[ConversationContext] | None" = None
    size: int = ENTRY_OVERHEAD_BYTES


class Ahead(NamedTuple):
    """A turn's context, ready or on its way, and how: "extended" or "read ahead"."""

    context: "asyncio.Future[ConversationContext]"
    how: str


ReadAhead = Callable[[CompletedTurn], Awaitable[ConversationContext]]


class NextContexts:
    """Per conversation, the next turn's context, so that it needs no read on arrival."""

    def __init__(
        self,
        settings: ContextReuseSettings,
        *,
        max_tokens: int,
        count: CountTokens,
        read_ahead: ReadAhead | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._max_tokens = max_tokens
        self._count = count
        self._read_ahead = read_ahead
        self._entries: TTLCache[Key, _Entry] = TTLCache(
            max(settings.max_bytes, 1), settings.ttl_s, timer=clock, getsizeof=lambda e: e.size
        )

    def __len__(self) -> int:
        return len(self._entries)

    def take(self, turn: TurnRequest) -> Ahead | None:
        """The context of `turn`, when the previous turn of its conversation completed here;
        None otherwise (read memory now)."""
        if not self._settings.enabled:
            return None
        key = (turn.tenant_id, turn.conversation_id)
        entry = self._entries.pop(key, None)
        self._put(key, _Entry(turn.request_id))
        if entry is None or not entry.completed or entry.request_id == turn.request_id:
            # Nothing kept, the previous turn never completed here, or a redelivery.
            if entry is not None and entry.reading is not None:
                entry.reading.cancel()
            return None
        if entry.reading is not None:
            return Ahead(entry.reading, "read ahead")
        assert entry.context is not None  # a completed entry holds one or the other
        ready: asyncio.Future[ConversationContext] = asyncio.get_running_loop().create_future()
        ready.set_result(entry.context)
        return Ahead(ready, "extended")

    def started(self, turn: TurnRequest, context: ConversationContext) -> None:
        """`turn` runs with `context`."""
        key = (turn.tenant_id, turn.conversation_id)
        entry = self._entries.get(key)
        if entry is None or entry.request_id != turn.request_id or entry.context is not None:
            return
        self._put(key, _Entry(turn.request_id, context, size=_size(context)))

    def completed(self, record: CompletedTurn) -> None:
        """`record` was published: its turn's context, extended by it, is the next one's, or
        the next one's is read ahead."""
        key = (record.tenant_id, record.conversation_id)
        entry = self._entries.get(key)
        if entry is None or entry.request_id != record.request_id or entry.completed:
            return
        extended = None
        if entry.context is not None and entry.context.complete and not entry.context.degraded:
            extended = self._extend(entry.context, record)
        if extended is not None:
            self._put(key, _Entry(record.request_id, extended, True, size=_size(extended)))
        elif self._read_ahead is not None:
            reading = asyncio.ensure_future(self._read_ahead(record))
            reading.add_done_callback(_seen)
            self._put(key, _Entry(record.request_id, None, True, reading))
        else:
            self._entries.pop(key, None)

    def clear(self) -> None:
        """Forget everything: partitions were revoked, so other members may run turns."""
        for entry in self._entries.values():
            if entry.reading is not None:
                entry.reading.cancel()
        self._entries.clear()

    def _extend(
        self, context: ConversationContext, record: CompletedTurn
    ) -> ConversationContext | None:
        """`context` plus the turn of `record`, or None when that would leave something out
        (the budget) or pass a limit."""
        messages = messages_of(record)
        known = {(fact.kind, fact.value) for fact in context.facts}
        new_facts = [f for f, _ in facts_of(messages) if (f.kind, f.value) not in known]
        cost = sum(self._count(m.text) + PER_MESSAGE_OVERHEAD_TOKENS for m in messages)
        cost += sum(self._count(fact_line(f)) + FACT_OVERHEAD_TOKENS for f in new_facts)
        settings = self._settings
        if (
            context.token_count + cost > self._max_tokens
            or len(context.messages) + len(messages) > settings.max_messages
            or len(context.facts) + len(new_facts) >= settings.max_facts
        ):
            return None
        extended = ConversationContext()
        extended.CopyFrom(context)
        extended.messages.extend(m.to_proto() for m in messages)
        extended.facts.extend(new_facts)
        extended.token_count = context.token_count + cost
        return extended

    def _put(self, key: Key, entry: _Entry) -> None:
        if self._settings.max_conversations == 0:
            return
        self._entries.pop(key, None)  # re-inserted: its time-to-live starts again
        try:
            self._entries[key] = entry  # evicts the least recently used until the bytes fit
        except ValueError:  # one entry larger than the whole cache: not kept
            return
        while len(self._entries) > self._settings.max_conversations:
            self._entries.popitem()


def _size(context: ConversationContext) -> int:
    return ENTRY_OVERHEAD_BYTES + context.ByteSize()


def _seen(read: "asyncio.Future[ConversationContext]") -> None:
    """Mark a read ahead's failure as seen: a turn that uses it gets the same error."""
    if not read.cancelled():
        read.exception()
