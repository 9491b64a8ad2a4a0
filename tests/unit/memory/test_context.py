from switchboard.memory.context import PER_MESSAGE_OVERHEAD_TOKENS, fit_context
from switchboard.memory.tokens import count_tokens, encoding_for
from switchboard.v1.chat_pb2 import ROLE_ASSISTANT, ROLE_USER, Message


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
