"""The bounded in-process cache that answers `GetContext` while MongoDB is unreachable.

It holds, per conversation, what this process last read for a context (summary, facts,
the newest messages) plus every turn it received from `chat.turns` since, including the
turn whose write is still being retried. Bounded four ways: the bytes of text it holds and a
number of conversations (least recently used go first), a number of messages and of facts
per conversation (newest kept), and a time-to-live since a conversation was last written
(cachetools' `TTLCache` keeps the order, the sizes and the expiry). It is per process: a
conversation this replica never read nor received is not in it, and then the context
degrades to the current message alone.

It also spares the store a read: when a context was read here for turn R, and the next
thing this replica received of the conversation was turn R itself, what it holds is the
conversation as the store will hold it once R is written (one turn of a conversation runs
at a time, so nothing else can have happened to it). The next turn's context is answered
from it (`reuse`), usually while R's write is still under way.
"""

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from cachetools import TTLCache

from switchboard.conversation.records import ContextSnapshot, StoredMessage, SummaryState
from switchboard.v1.memory_pb2 import Fact

Key = tuple[str, str]

# What a cached message or fact costs beyond its text (object headers, ids, times): an
# estimate, so that many short messages are not counted as nearly free.
ENTRY_OVERHEAD_BYTES = 200


@dataclass
class Entry:
    summary: SummaryState
    facts: list[Fact]
    # Oldest first, unique by (request id, role).
    messages: list[StoredMessage]
    # The turn the last complete store read was for ("" when reuse is off for this entry),
    # and whether that turn, and only it, was received since.
    read_for: str = ""
    current: bool = False


def entry_bytes(entry: Entry) -> int:
    """The size an entry is counted at: its texts in UTF-8 plus a fixed overhead each."""
    texts = len(entry.summary.text.encode())
    texts += sum(len(m.text.encode()) + len(m.request_id) for m in entry.messages)
    texts += sum(len(f.kind) + len(f.value.encode()) for f in entry.facts)
    return ENTRY_OVERHEAD_BYTES * (1 + len(entry.messages) + len(entry.facts)) + texts


class ContextCache:
    """Recent context per (tenant, conversation), bounded in size and age."""

    def __init__(
        self,
        max_conversations: int,
        max_messages: int,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._max_conversations = max_conversations
        self._max_messages = max_messages
        self._entries: TTLCache[Key, Entry] = TTLCache(
            max(max_bytes, 1), ttl_s, timer=clock, getsizeof=entry_bytes
        )

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, key: Key, snapshot: ContextSnapshot, request_id: str = "") -> None:
        """Replace what is known of a conversation with a fresh read of the store for turn
        `request_id`, keeping received turns that are newer than anything the read returned
        (not stored yet)."""
        newest_stored = max(
            (m.position for m in snapshot.newest_first), default=snapshot.summary.until_position
        )
        messages = sorted(snapshot.newest_first, key=lambda m: m.position)
        messages.extend(self.newer_than(key, newest_stored)[::-1])
        # Only a read that holds every unsummarised message can stand in for the next one.
        read_for = request_id if snapshot.complete else ""
        self._put(key, Entry(snapshot.summary, list(snapshot.facts), messages, read_for))

    def reuse(
        self, key: Key, request_id: str, max_messages: int, max_facts: int
    ) -> ContextSnapshot | None:
        """The context for turn `request_id` without a store read, when the previous turn's
        read was made here and that turn alone was received since; else None. The entry
        then waits for `request_id` to be received in turn."""
        entry = self._entries.get(key)
        if entry is None or not entry.current or not request_id:
            return None
        entry.read_for, entry.current = request_id, False
        newer = [m for m in entry.messages if m.position > entry.summary.until_position]
        return ContextSnapshot(
            summary=entry.summary,
            facts=tuple(entry.facts[-max_facts:] if max_facts else ()),
            newest_first=tuple(reversed(newer))[:max_messages],
        )

    def newer_than(self, key: Key, position: int) -> list[StoredMessage]:
        """Received messages after `position`, newest first: turns still being written."""
        entry = self._entries.get(key)
        if entry is None:
            return []
        return [m for m in reversed(entry.messages) if m.position > position]

    def add(self, key: Key, messages: Sequence[StoredMessage], facts: Iterable[Fact]) -> None:
        """Add the messages and facts of a turn just received (a repeat changes nothing)."""
        entry = self._entries.get(key)
        if entry is None:
            entry = Entry(SummaryState(), [], [])
        seen = {(m.request_id, m.role) for m in entry.messages}
        fresh = [m for m in messages if (m.request_id, m.role) not in seen]
        if fresh:
            # Current only when the turn read for is the first (and only) one received.
            received = {m.request_id for m in fresh}
            entry.current = not entry.current and received == {entry.read_for}
            if not entry.current:
                entry.read_for = ""
        entry.messages = sorted([*entry.messages, *fresh], key=lambda m: m.position)
        known = {(f.kind, f.value) for f in entry.facts}
        entry.facts.extend(f for f in facts if (f.kind, f.value) not in known)
        self._put(key, entry)

    def get(self, key: Key) -> ContextSnapshot | None:
        """What is known of a conversation, or None."""
        entry = self._entries.get(key)  # expired entries are gone; a hit is most recent now
        if entry is None:
            return None
        newer = [m for m in entry.messages if m.position > entry.summary.until_position]
        return ContextSnapshot(
            summary=entry.summary,
            facts=tuple(entry.facts),
            newest_first=tuple(reversed(newer)),
        )

    def forget(self, key: Key) -> None:
        """Drop a conversation (deleted, or its turns were refused)."""
        self._entries.pop(key, None)

    def _put(self, key: Key, entry: Entry) -> None:
        if self._max_conversations == 0:
            return
        if len(entry.messages) > self._max_messages or len(entry.facts) > self._max_messages:
            # Cut to size, it no longer holds every unsummarised message: no reuse.
            entry.read_for, entry.current = "", False
        entry.messages = entry.messages[-self._max_messages :]
        entry.facts = entry.facts[-self._max_messages :]
        # A new copy, so that the size the cache counted always matches what it holds.
        entry = Entry(
            entry.summary, list(entry.facts), list(entry.messages), entry.read_for, entry.current
        )
        self._entries.pop(key, None)  # re-inserted: its time-to-live starts again
        try:
            # Evicts the least recently used conversations until the bytes fit.
            self._entries[key] = entry
        except ValueError:  # one conversation larger than the whole cache: not kept
            return
        while len(self._entries) > self._max_conversations:
            self._entries.popitem()  # the least recently used
