from switchboard.conversation.tokens import count_tokens, encoding_for
from switchboard.conversation.window import (
    FACT_OVERHEAD_TOKENS,
    PER_MESSAGE_OVERHEAD_TOKENS,
    fact_line,
    fit_context,
)
from switchboard.v1.chat_pb2 import ROLE_ASSISTANT, ROLE_USER, Message
from switchboard.v1.memory_pb2 import Fact


def words(text: str) -> int:
    return len(text.split())


def test_newest_messages_that_fit_are_kept_oldest_first() -> None:
    newest_first = [
        Message(role=ROLE_ASSISTANT, text="three four five"),
        Message(role=ROLE_USER, text="one two"),
        Message(role=ROLE_ASSISTANT, text="too old to fit"),
    ]
    overhead = PER_MESSAGE_OVERHEAD_TOKENS
    budget = 1 + (3 + overhead) + (2 + overhead)
    context = fit_context("summary", newest_first, budget, words)
    assert [m.text for m in context.messages] == ["one two", "three four five"]
    assert context.summary == "summary" and context.token_count == budget


def test_a_budget_smaller_than_the_newest_message_keeps_none() -> None:
    context = fit_context("", [Message(text="a b c")], 2, words)
    assert list(context.messages) == [] and context.token_count == 0


def test_tokens_are_counted_with_the_model_family_tokenizer() -> None:
    assert count_tokens("hello world", "gpt-4o-mini") == 2
    assert encoding_for("gpt-4o-mini").name == "o200k_base"
    assert encoding_for("gpt-4").name == "cl100k_base"
    assert encoding_for("claude-sonnet-4-5").name == "cl100k_base"
    assert encoding_for("some-local-model").name == "o200k_base"
    assert count_tokens("") == 0


def test_facts_come_first_then_the_summary_then_the_newest_messages() -> None:
    facts = [Fact(kind="order_number", value="12345"), Fact(kind="goal", value="a refund")]
    newest_first = [Message(text="m3 m3"), Message(text="m2 m2"), Message(text="m1 m1")]
    fact_costs = sum(words(fact_line(f)) + FACT_OVERHEAD_TOKENS for f in facts)  # 3 + 4
    assert fact_costs == 7
    message_cost = 2 + PER_MESSAGE_OVERHEAD_TOKENS
    budget = fact_costs + 3 + 2 * message_cost
    context = fit_context("three word summary", newest_first, budget, words, facts)
    assert list(context.facts) == facts
    assert context.summary == "three word summary"
    assert [m.text for m in context.messages] == ["m2 m2", "m3 m3"]
    assert context.token_count == budget


def test_the_count_never_exceeds_the_budget_and_equals_a_recount() -> None:
    facts = [Fact(kind="customer_name", value="Dana Reyes")]
    summary = "The customer asked about a late parcel and was promised a refund."
    newest_first = [Message(text=f"message number {n} " * (n + 1)) for n in range(30)]
    for budget in range(0, 400, 7):
        context = fit_context(summary, newest_first, budget, count_tokens, facts)
        recount = (
            sum(count_tokens(fact_line(f)) + FACT_OVERHEAD_TOKENS for f in context.facts)
            + (count_tokens(context.summary) if context.summary else 0)
            + sum(count_tokens(m.text) + PER_MESSAGE_OVERHEAD_TOKENS for m in context.messages)
        )
        assert context.token_count == recount <= budget
        # The window is the newest messages, without gaps.
        kept = [m.text for m in context.messages]
        assert kept == [m.text for m in reversed(newest_first[: len(kept)])]


def test_a_summary_too_long_for_the_budget_is_left_out_but_messages_still_fit() -> None:
    context = fit_context("a b c d e f g h", [Message(text="x")], 6, words)
    assert context.summary == "" and [m.text for m in context.messages] == ["x"]
    assert context.token_count == 1 + PER_MESSAGE_OVERHEAD_TOKENS
