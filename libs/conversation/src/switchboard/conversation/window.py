"""Fitting facts, the rolling summary and the newest messages into a token budget.

The arithmetic, exactly as `token_count` reports it (tokens counted with the tokenizer of
the requested model's family):
    sum over kept facts    (tokens("<kind>: <value>") + FACT_OVERHEAD_TOKENS)
  + tokens(summary)        if the summary is kept
  + sum over kept messages (tokens(text) + PER_MESSAGE_OVERHEAD_TOKENS)
and `token_count` never exceeds the budget. What goes in first: the facts (oldest first,
they are few and must survive), then the summary, then messages from the newest back until
the next one would not fit, so the window has no gaps.
"""

from collections.abc import Callable, Sequence

from switchboard.v1.chat_pb2 import Message
from switchboard.v1.memory_pb2 import ConversationContext, Fact

# Chat formats add a few tokens per message for role and separators.
PER_MESSAGE_OVERHEAD_TOKENS = 4
# Facts are rendered one per line: the newline.
FACT_OVERHEAD_TOKENS = 1


def fact_line(fact: Fact) -> str:
    """How a fact is rendered for a model."""
    return f"{fact.kind}: {fact.value}"


def fit_context(
    summary: str,
    newest_first: Sequence[Message],
    max_tokens: int,
    count: Callable[[str], int],
    facts: Sequence[Fact] = (),
) -> ConversationContext:
    """Facts, the summary and as many of the newest messages as fit, messages oldest first."""
    used = 0
    kept_facts: list[Fact] = []
    for fact in facts:
        cost = count(fact_line(fact)) + FACT_OVERHEAD_TOKENS
        if used + cost > max_tokens:
            break
        kept_facts.append(fact)
        used += cost
    kept_summary = ""
    if summary:
        cost = count(summary)
        if used + cost <= max_tokens:
            kept_summary = summary
            used += cost
    kept: list[Message] = []
    for message in newest_first:
        cost = count(message.text) + PER_MESSAGE_OVERHEAD_TOKENS
        if used + cost > max_tokens:
            break
        kept.append(message)
        used += cost
    kept.reverse()
    return ConversationContext(
        summary=kept_summary, messages=kept, token_count=used, facts=kept_facts
    )
