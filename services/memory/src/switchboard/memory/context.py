"""Fitting the newest messages of a conversation into a token budget."""

from collections.abc import Callable, Sequence

from switchboard.v1.chat_pb2 import Message
from switchboard.v1.memory_pb2 import ConversationContext

# Chat formats add a few tokens per message for role and separators.
PER_MESSAGE_OVERHEAD_TOKENS = 4


def fit_context(
    summary: str,
    newest_first: Sequence[Message],
    max_tokens: int,
    count: Callable[[str], int],
) -> ConversationContext:
    """The summary plus as many of the newest messages as fit, oldest first."""
    used = count(summary) if summary else 0
    kept: list[Message] = []
    for message in newest_first:
        cost = count(message.text) + PER_MESSAGE_OVERHEAD_TOKENS
        if used + cost > max_tokens:
            break
        kept.append(message)
        used += cost
    kept.reverse()
    return ConversationContext(summary=summary, messages=kept, token_count=used)
