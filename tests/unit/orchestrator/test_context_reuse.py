"""NextContexts: the next turn's context, extended by the turn run here (decision 0084)."""

import asyncio
from datetime import UTC, datetime

from switchboard.conversation.facts import facts_of
from switchboard.conversation.records import messages_of
from switchboard.conversation.tokens import count_tokens
from switchboard.conversation.window import fit_context
from switchboard.orchestrator.context_reuse import NextContexts
from switchboard.orchestrator.settings import ContextReuseSettings
from switchboard.v1.chat_pb2 import Message
from switchboard.v1.events_pb2 import CompletedTurn, TurnRequest
from switchboard.v1.memory_pb2 import ConversationContext, Fact

T0 = int(datetime(2026, 12, 7, 9, 0, tzinfo=UTC).timestamp())


def turn(request_id: str, conversation: str = "c1") -> TurnRequest:
    return TurnRequest(tenant_id="acme", conversation_id=conversation, request_id=request_id)


def record(request_id: str, n: int, user: str, assistant: str, conversation: str = "c1"):  # type: ignore[no-untyped-def]
    done = CompletedTurn(
        tenant_id="acme",
        conversation_id=conversation,
        request_id=request_id,
        user_message=user,
        assistant_message=assistant,
        model="gpt-4o-mini",
    )
    done.accepted_at.FromSeconds(T0 + 60 * n)
    done.completed_at.FromSeconds(T0 + 60 * n + 2)
    return done


def contexts(**settings) -> NextContexts:  # type: ignore[no-untyped-def]
    return NextContexts(ContextReuseSettings(**settings), max_tokens=4_000, count=count_tokens)


def took(
    kept: NextContexts, request_id: str, conversation: str = "c1"
) -> ConversationContext | None:
    """What `take` hands out, once ready."""
    ahead = kept.take(turn(request_id, conversation))
    return None if ahead is None else ahead.context.result()


def run(
    kept: NextContexts, request_id: str, context: ConversationContext, done: CompletedTurn
) -> ConversationContext | None:
    """One turn through the three steps; what it got from `take`."""
    reused = took(kept, request_id, done.conversation_id)
    kept.started(turn(request_id, done.conversation_id), reused or context)
    kept.completed(done)
    return reused


async def test_the_extended_context_is_what_memory_would_answer_once_the_turn_is_stored() -> None:
    first = record("r1", 1, "Hi, my name is Dana Reyes and order 77812 never came.", "Sorry, Dana.")
    second = record(
        "r2", 2, "I want to cancel my order 77812 please.", "Done: ticket T-99 is open."
    )
    # Memory's context for r1: a summary, one fact, two messages, fitted by memory's rules.
    older = record("r0", 0, "Hello", "Hello! How can I help?")
    summary = "The customer greeted the assistant."
    fact = Fact(kind="goal", value="get help", request_id="r0")
    stored = [m.to_proto() for m in reversed(messages_of(older))]
    at_r1 = fit_context(summary, stored, 4_000, count_tokens, [fact])
    at_r1.complete = True

    kept = contexts()
    assert run(kept, "r1", at_r1, first) is None
    reused = took(kept, "r2")
    assert reused is not None

    # Memory, after storing r1: the same summary, facts in order, messages newest first.
    newest_first = [
        m.to_proto() for m in (*reversed(messages_of(first)), *reversed(messages_of(older)))
    ]
    facts = [fact, *(f for f, _ in facts_of(messages_of(first)))]
    expected = fit_context(summary, newest_first, 4_000, count_tokens, facts)
    expected.complete = True
    assert reused == expected
    assert [f.value for f in reused.facts] == ["get help", "Dana Reyes", "77812"]

    # And so on for the turn after: the order number is not stated twice.
    kept.started(turn("r2"), reused)
    kept.completed(second)
    third = took(kept, "r3")
    assert third is not None
    assert [m.request_id for m in third.messages] == ["r0", "r0", "r1", "r1", "r2", "r2"]
    assert [f.value for f in third.facts][-3:] == ["77812", "cancel my order 77812 please", "T-99"]


async def test_only_the_turn_after_the_completed_one_gets_it() -> None:
    kept = contexts()
    base = ConversationContext(complete=True)
    run(kept, "r1", base, record("r1", 1, "hi", "hello"))
    assert took(kept, "r1") is None  # a redelivery of r1 itself
    assert took(kept, "r2") is None  # the entry went with the redelivery
    # Another conversation is kept apart.
    run(kept, "x1", base, record("x1", 1, "hi", "hello", conversation="c2"))
    assert took(kept, "r9") is None
    assert took(kept, "x2", "c2") is not None


async def test_a_turn_that_did_not_complete_here_leaves_nothing() -> None:
    kept = contexts()
    base = ConversationContext(complete=True)
    run(kept, "r1", base, record("r1", 1, "hi", "hello"))
    reused = took(kept, "r2")
    assert reused is not None
    kept.started(turn("r2"), reused)
    kept.completed(record("r7", 7, "other", "turn"))  # not r2's record: ignored
    assert took(kept, "r3") is None
    # A turn that arrives while another is under way drops the entry.
    kept.started(turn("r3"), base)
    took(kept, "r4")
    kept.completed(record("r3", 3, "hi", "hello"))
    assert took(kept, "r5") is None


async def test_incomplete_or_degraded_contexts_are_not_extended() -> None:
    for context in (ConversationContext(), ConversationContext(complete=True, degraded=True)):
        kept = contexts()
        run(kept, "r1", context, record("r1", 1, "hi", "hello"))
        assert took(kept, "r2") is None


async def test_past_the_budget_or_a_limit_the_next_turn_reads_memory() -> None:
    base = ConversationContext(complete=True, token_count=0)
    long = "word " * 300
    budget = NextContexts(ContextReuseSettings(), max_tokens=200, count=count_tokens)
    run(budget, "r1", base, record("r1", 1, long, "ok"))
    assert budget.take(turn("r2")) is None

    few = contexts(max_messages=3)
    run(few, "r1", base, record("r1", 1, "hi", "hello"))
    second = took(few, "r2")
    assert second is not None and len(second.messages) == 2
    few.started(turn("r2"), second)
    few.completed(record("r2", 2, "hi", "hello"))  # 4 messages > 3
    assert few.take(turn("r3")) is None

    facts = contexts(max_facts=2)
    run(facts, "r1", base, record("r1", 1, "order 12345 and order 55555", "ok"))
    assert facts.take(turn("r2")) is None  # 2 facts: at the limit, as memory counts it


async def test_a_rebalance_forgets_everything_and_switching_off_keeps_nothing() -> None:
    kept = contexts()
    base = ConversationContext(complete=True)
    run(kept, "r1", base, record("r1", 1, "hi", "hello"))
    kept.clear()
    assert took(kept, "r2") is None

    off = contexts(enabled=False)
    run(off, "r1", base, record("r1", 1, "hi", "hello"))
    assert off.take(turn("r2")) is None and len(off) == 0


async def test_bounded_in_conversations_bytes_and_age() -> None:
    base = ConversationContext(complete=True)
    kept = contexts(max_conversations=2)
    for n in range(3):
        run(kept, f"r{n}", base, record(f"r{n}", n, "hi", "hello", conversation=f"c{n}"))
    assert len(kept) == 2
    assert took(kept, "next", "c0") is None  # the least recently used went

    small = contexts(max_bytes=2_000)
    for n in range(10):
        run(small, f"r{n}", base, record(f"r{n}", n, "x" * 200, "y" * 200, conversation=f"c{n}"))
    assert 0 < len(small) < 10

    now = [0.0]
    aging = NextContexts(
        ContextReuseSettings(ttl_s=60), max_tokens=4_000, count=count_tokens, clock=lambda: now[0]
    )
    run(aging, "r1", base, record("r1", 1, "hi", "hello"))
    now[0] = 61.0
    assert aging.take(turn("r2")) is None


async def test_the_turns_own_messages_are_appended_as_memory_returns_them() -> None:
    kept = contexts()
    base = ConversationContext(
        complete=True, messages=[Message(role=1, text="earlier", request_id="r0")], token_count=5
    )
    run(kept, "r1", base, record("r1", 1, "hi", "hello"))
    reused = took(kept, "r2")
    assert reused is not None
    user, assistant = reused.messages[1:]
    assert (user.text, user.request_id, assistant.text, assistant.model) == (
        "hi",
        "r1",
        "hello",
        "gpt-4o-mini",
    )
    assert assistant.created_at.seconds == T0 + 62
    assert reused.token_count == 5 + count_tokens("hi") + count_tokens("hello") + 8


class Reads:
    """A stand-in for memory's read ahead: records what it was asked, answers `context`."""

    def __init__(self, context: ConversationContext) -> None:
        self.context = context
        self.asked: list[str] = []
        self.gate = asyncio.Event()

    async def __call__(self, record: CompletedTurn) -> ConversationContext:
        self.asked.append(record.request_id)
        await self.gate.wait()
        return self.context


async def test_what_cannot_be_extended_is_read_ahead_with_the_turn_attached() -> None:
    summarised = ConversationContext(summary="so far", complete=True, token_count=3)
    reads = Reads(summarised)
    kept = NextContexts(
        ContextReuseSettings(max_messages=2), max_tokens=4_000, count=count_tokens, read_ahead=reads
    )
    run(kept, "r1", ConversationContext(complete=True), record("r1", 1, "hi", "hello"))
    assert reads.asked == []  # two messages: extended
    second = kept.take(turn("r2"))
    assert second is not None and second.how == "extended"
    kept.started(turn("r2"), second.context.result())
    kept.completed(record("r2", 2, "and", "more"))  # four messages: past the limit
    await asyncio.sleep(0)
    assert reads.asked == ["r2"]  # read at once, with r2 attached
    third = kept.take(turn("r3"))
    assert third is not None and third.how == "read ahead" and not third.context.done()
    reads.gate.set()
    assert await third.context == summarised
    # An incomplete or degraded context is read ahead too, not extended.
    kept.started(turn("r3"), ConversationContext(degraded=True))
    kept.completed(record("r3", 3, "x", "y"))
    await asyncio.sleep(0)
    assert reads.asked == ["r2", "r3"]


async def test_a_read_ahead_nobody_will_use_is_cancelled() -> None:
    reads = Reads(ConversationContext(complete=True))
    kept = NextContexts(
        ContextReuseSettings(), max_tokens=4_000, count=count_tokens, read_ahead=reads
    )
    run(kept, "r1", ConversationContext(), record("r1", 1, "hi", "hello"))  # incomplete: read
    await asyncio.sleep(0)
    redelivered = kept._entries[("acme", "c1")].reading
    assert redelivered is not None
    assert kept.take(turn("r1")) is None  # r1 again
    await asyncio.sleep(0)
    assert redelivered.cancelled()

    run(kept, "r5", ConversationContext(), record("r5", 5, "hi", "hello"))
    await asyncio.sleep(0)
    rebalanced = kept._entries[("acme", "c1")].reading
    assert rebalanced is not None
    kept.clear()
    await asyncio.sleep(0)
    assert rebalanced.cancelled() and len(kept) == 0
