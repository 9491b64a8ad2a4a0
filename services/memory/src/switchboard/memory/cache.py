"""The bounded in-process cache that answers `GetContext` while MongoDB is unreachable.

It holds, per conversation, what this process last read for a context (summary, facts,
the newest messages) plus every turn it received from `chat.turns` since, including the
turn whose write is still being retried. Bounded three ways: a number of conversations
(least recently used go first), a number of messages and of facts per conversation
(newest kept) and an idle time-to-live. It is per process: a conversation this replica
never read nor received is not in it, and then the context degrades to the current
message alone.
"""

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from switchboard.memory.records import ContextSnapshot, StoredMessage, SummaryState
from switchboard.v1.memory_pb2 import Fact

Key = tuple[str, str]


@dataclass
class _Entry:
    summary: SummaryState
    facts: list[Fact]
    # Oldest first, unique by (request id, role).
    messages: list[StoredMessage]
    touched: float = field(default=0.0)


class ContextCache:
    """Recent context per (tenant, conversation), bounded in size and age."""

    def __init__(
        self,
        max_conversations: int,
        max_messages: int,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_conversations = max_conversations
        self._max_messages = max_messages
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, key: Key, snapshot: ContextSnapshot) -> None:
        """Replace what is known of a conversation with a fresh read of the store, keeping
        received turns that are newer than anything the read returned (not stored yet)."""
        newest_stored = max(
            (m.position for m in snapshot.newest_first), default=snapshot.summary.until_position
        )
        messages = sorted(snapshot.newest_first, key=lambda m: m.position)
        messages.extend(self.newer_than(key, newest_stored)[::-1])
        self._put(key, _Entry(snapshot.summary, list(snapshot.facts), messages))

    def newer_than(self, key: Key, position: int) -> list[StoredMessage]:
        """Received messages after `position`, newest first: turns still being written."""
        entry = self._entries.get(key)
        if entry is None or self._expired(entry):
            return []
        return [m for m in reversed(entry.messages) if m.position > position]

    def add(self, key: Key, messages: Sequence[StoredMessage], facts: Iterable[Fact]) -> None:
        """Add the messages and facts of a turn just received (a repeat changes nothing)."""
        entry = self._entries.get(key)
        if entry is None or self._expired(entry):
            entry = _Entry(SummaryState(), [], [])
        seen = {(m.request_id, m.role) for m in entry.messages}
        fresh = [m for m in messages if (m.request_id, m.role) not in seen]
        entry.messages = sorted([*entry.messages, *fresh], key=lambda m: m.position)
        known = {(f.kind, f.value) for f in entry.facts}
        entry.facts.extend(f for f in facts if (f.kind, f.value) not in known)
        self._put(key, entry)

    def get(self, key: Key) -> ContextSnapshot | None:
        """What is known of a conversation, or None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._expired(entry):
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        newer = [m for m in entry.messages if m.position > entry.summary.until_position]
        return ContextSnapshot(
            summary=entry.summary,
            facts=tuple(entry.facts),
            newest_first=tuple(reversed(newer)),
        )

    def forget(self, key: Key) -> None:
        """Drop a conversation (deleted, or its turns were refused)."""
        self._entries.pop(key, None)

    def _expired(self, entry: _Entry) -> bool:
        return self._clock() - entry.touched > self._ttl_s

    def _put(self, key: Key, entry: _Entry) -> None:
        if self._max_conversations == 0:
            return
        entry.messages = entry.messages[-self._max_messages :]
        entry.facts = entry.facts[-self._max_messages :]
        entry.touched = self._clock()
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_conversations:
            self._entries.popitem(last=False)
