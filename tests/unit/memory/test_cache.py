from datetime import UTC, datetime

from switchboard.conversation.records import ContextSnapshot, StoredMessage, SummaryState
from switchboard.memory.cache import ContextCache, Entry, entry_bytes
from switchboard.v1.chat_pb2 import ROLE_ASSISTANT, ROLE_USER
from switchboard.v1.memory_pb2 import Fact

NOW = datetime.now(UTC)
KEY = ("acme", "c1")


def turn(n: int) -> tuple[StoredMessage, StoredMessage]:
    return (
        StoredMessage(n * 10 + ROLE_USER, f"r{n}", ROLE_USER, f"question {n}", NOW),
        StoredMessage(n * 10 + ROLE_ASSISTANT, f"r{n}", ROLE_ASSISTANT, f"answer {n}", NOW),
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_received_turns_join_what_was_read_newest_first_without_repeats() -> None:
    cache = ContextCache(10, 10, 60)
    cache.remember(
        KEY,
        ContextSnapshot(
            SummaryState(1, "summary", until_position=13),
            (Fact(kind="order_number", value="1"),),
            (*reversed(turn(2)), *reversed(turn(1))),
        ),
    )
    cache.add(KEY, turn(3), [Fact(kind="order_number", value="1"), Fact(kind="goal", value="x")])
    cache.add(KEY, turn(3), [])  # a redelivery
    snapshot = cache.get(KEY)
    assert snapshot is not None
    assert snapshot.summary.text == "summary"
    # Turn 1's messages are covered by the summary.
    assert [m.text for m in snapshot.newest_first] == [
        "answer 3",
        "question 3",
        "answer 2",
        "question 2",
    ]
    assert [(f.kind, f.value) for f in snapshot.facts] == [("order_number", "1"), ("goal", "x")]


def test_messages_per_conversation_are_bounded_newest_kept() -> None:
    cache = ContextCache(10, 3, 60)
    for n in range(5):
        cache.add(KEY, turn(n), [])
    snapshot = cache.get(KEY)
    assert snapshot is not None
    assert [m.text for m in snapshot.newest_first] == ["answer 4", "question 4", "answer 3"]


def test_least_recently_used_conversations_go_first() -> None:
    cache = ContextCache(2, 10, 60)
    cache.add(("t", "a"), turn(1), [])
    cache.add(("t", "b"), turn(1), [])
    assert cache.get(("t", "a")) is not None  # a is now the most recently used
    cache.add(("t", "c"), turn(1), [])
    assert len(cache) == 2
    assert cache.get(("t", "b")) is None and cache.get(("t", "a")) is not None


def test_idle_entries_expire_and_forget_drops_at_once() -> None:
    clock = Clock()
    cache = ContextCache(10, 10, 60, clock=clock)
    cache.add(KEY, turn(1), [])
    cache.add(("acme", "c2"), turn(1), [])
    clock.now = 61
    assert cache.get(KEY) is None
    cache.add(KEY, turn(2), [])
    snapshot = cache.get(KEY)
    assert snapshot is not None and [m.request_id for m in snapshot.newest_first] == ["r2", "r2"]
    cache.forget(KEY)
    assert cache.get(KEY) is None


def test_tenants_never_share_an_entry() -> None:
    cache = ContextCache(10, 10, 60)
    cache.add(("acme", "c1"), turn(1), [])
    assert cache.get(("other", "c1")) is None


def test_a_cache_of_size_zero_keeps_nothing() -> None:
    cache = ContextCache(0, 10, 60)
    cache.add(KEY, turn(1), [])
    assert cache.get(KEY) is None


def test_a_fresh_read_keeps_received_turns_newer_than_the_store() -> None:
    cache = ContextCache(10, 10, 60)
    cache.add(KEY, turn(1), [])
    cache.add(KEY, turn(2), [])  # received, its write not acknowledged yet
    assert [m.text for m in cache.newer_than(KEY, 13)] == ["answer 2", "question 2"]
    # The store only has turn 1 so far.
    cache.remember(KEY, ContextSnapshot(SummaryState(), (), tuple(reversed(turn(1)))))
    snapshot = cache.get(KEY)
    assert snapshot is not None
    assert [m.text for m in snapshot.newest_first] == [
        "answer 2",
        "question 2",
        "answer 1",
        "question 1",
    ]
    assert cache.newer_than(("other", "c1"), 0) == []


def test_conversations_are_bounded_by_bytes_least_recently_used_first() -> None:
    one = entry_bytes(Entry(SummaryState(), [], list(turn(1))))
    cache = ContextCache(10, 10, 60, max_bytes=2 * one)
    cache.add(("t", "a"), turn(1), [])
    cache.add(("t", "b"), turn(1), [])
    assert cache.get(("t", "a")) is not None  # a is now the most recently used
    cache.add(("t", "c"), turn(1), [])
    assert len(cache) == 2
    assert cache.get(("t", "b")) is None and cache.get(("t", "a")) is not None


def test_a_conversation_larger_than_the_whole_cache_is_not_kept() -> None:
    cache = ContextCache(10, 10, 60, max_bytes=100)
    cache.add(KEY, turn(1), [])
    assert cache.get(KEY) is None and len(cache) == 0


def read_for(cache: ContextCache, request_id: str, *turns: int, complete: bool = True) -> None:
    """A store read, made for turn `request_id`, that returned `turns` (oldest first)."""
    newest_first = tuple(m for n in reversed(turns) for m in reversed(turn(n)))
    cache.remember(
        KEY,
        ContextSnapshot(SummaryState(), (Fact(kind="goal", value="g"),), newest_first, complete),
        request_id,
    )


def test_the_read_turn_received_and_nothing_else_answers_the_next_read() -> None:
    cache = ContextCache(10, 10, 60)
    read_for(cache, "r2", 1)
    assert cache.reuse(KEY, "r3", 200, 20) is None  # turn r2 not received yet
    cache.add(KEY, turn(2), [Fact(kind="order_number", value="7")])
    cache.add(KEY, turn(2), [])  # a redelivery changes nothing
    snapshot = cache.reuse(KEY, "r3", 200, 20)
    assert snapshot is not None
    assert [m.request_id for m in snapshot.newest_first] == ["r2", "r2", "r1", "r1"]
    assert [f.value for f in snapshot.facts] == ["g", "7"]
    # Once: the entry now waits for r3 itself.
    assert cache.reuse(KEY, "r4", 200, 20) is None
    cache.add(KEY, turn(3), [])
    again = cache.reuse(KEY, "r4", 200, 20)
    assert again is not None and again.newest_first[0].request_id == "r3"
    # The store's limits apply: the newest messages and facts only.
    cache.add(KEY, turn(4), [])
    limited = cache.reuse(KEY, "r5", 3, 1)
    assert limited is not None
    assert [m.request_id for m in limited.newest_first] == ["r4", "r4", "r3"]
    assert [f.value for f in limited.facts] == ["7"]


def test_any_other_turn_received_first_means_the_store_is_read() -> None:
    cache = ContextCache(10, 10, 60)
    read_for(cache, "r2", 1)
    cache.add(KEY, turn(3), [])  # another replica ran r2: this one never received it
    cache.add(KEY, turn(2), [])
    assert cache.reuse(KEY, "r4", 200, 20) is None

    read_for(cache, "r2", 1)
    cache.add(KEY, turn(2), [])
    cache.add(KEY, turn(3), [])  # two turns after one read: r3's read was made elsewhere
    assert cache.reuse(KEY, "r4", 200, 20) is None


def test_no_reuse_without_a_turn_id_a_complete_read_or_room_for_every_message() -> None:
    cache = ContextCache(10, 10, 60)
    read_for(cache, "", 1)
    cache.add(KEY, turn(2), [])
    assert cache.reuse(KEY, "r3", 200, 20) is None

    read_for(cache, "r2", 1, complete=False)  # the window did not reach the summary
    cache.add(KEY, turn(2), [])
    assert cache.reuse(KEY, "r3", 200, 20) is None

    read_for(cache, "r2", 1)
    cache.add(KEY, turn(2), [])
    assert cache.reuse(KEY, "", 200, 20) is None

    small = ContextCache(10, 4, 60)  # four messages per conversation: cut after turn 3
    read_for(small, "r3", 1, 2)
    small.add(KEY, turn(3), [])
    assert small.reuse(KEY, "r4", 200, 20) is None


def test_a_forgotten_conversation_is_read_again() -> None:
    cache = ContextCache(10, 10, 60)
    read_for(cache, "r2", 1)
    cache.add(KEY, turn(2), [])
    cache.forget(KEY)  # deleted, or its turn dropped
    assert cache.reuse(KEY, "r3", 200, 20) is None
