"""Deterministic replies and token accounting, as pure functions.

A reply depends only on the model, the text of the last user message and the requested
length, so the same request always gets the same reply, byte for byte. Token counts come from
a real BPE tokenizer (`o200k_base`, shipped offline by `bpe-openai`) and the streamed pieces
are the reply's real tokens.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import bpe_openai

ENCODING_NAME = "o200k_base"

# The accounting OpenAI documents for its chat models: every message costs a few tokens of
# framing on top of its text, and the reply is primed with a few more. Applied to Anthropic
# prompts as well, for lack of a published formula.
MESSAGE_OVERHEAD_TOKENS = 3
NAME_OVERHEAD_TOKENS = 1
REPLY_PRIMING_TOKENS = 3

_GREETINGS = (
    "Thanks for reaching out",
    "Thank you for contacting us",
    "Thanks for getting in touch",
    "I appreciate you contacting us",
    "Thank you for your message",
)

_SENTENCES = (
    "I have pulled up your account and I am looking into this right now.",
    "I completely understand how frustrating this must be.",
    "Let me check the details on my side before we go any further.",
    "Your request has been noted and a confirmation will follow by email.",
    "Could you please confirm the email address associated with your account?",
    "I can see the most recent activity on your account from earlier today.",
    "Our team usually resolves issues like this within one business day.",
    "I have added a note to your case so that nobody asks you twice.",
    "If anything else comes up, just reply to this message and we will pick it up.",
    "For your security, please do not share your full card number in this chat.",
    "I am happy to walk you through the next steps one at a time.",
    "There is no additional charge for this change.",
    "I have escalated this to the right team and marked it as a priority.",
    "You should see the update reflected in your account within a few minutes.",
    "Is there anything else I can help you with today?",
    "Thank you for your patience while I look into this.",
)

AFTER_ANSWER = (
    "Is there anything else I can help you with today?",
    "If anything else comes up, just reply to this message and we will pick it up.",
    "I have added a note to your case so that nobody asks you twice.",
    "Just let me know if you have any other questions.",
    "I hope that helps.",
    "Thank you for your patience.",
)
"""Sentences that may follow an answer built from tool results."""

# Fill the last few tokens of the budget with whole sentences: with sentences of 2 to 6
# tokens, one of each, any gap left by the pool (shorter than its longest sentence, < 20)
# closes to within one token of the budget.
_SHORT = (
    ("I am here to help.",),
    ("Have a great day!",),
    ("Happy to help.", "Glad to help!"),
    ("Of course.", "Understood.", "Thanks again."),
    ("Sure.", "Thanks!", "Certainly."),
)
_TINY = "OK"
"""The reply when the budget is one token: no sentence is that short."""

_EXCERPT_MAX_WORDS = 8
_EXCERPT_MAX_CHARS = 60
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


@functools.cache
def _encoding() -> Any:  # bpe_openai ships no type information
    # bpe-openai 0.1.4 loads its vocabulary with a deprecated importlib.resources call.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return bpe_openai.get_encoding(ENCODING_NAME)


def warm_up() -> None:
    """Load the tokenizer now (about half a second) rather than on the first request."""
    _encoding()


def encode(text: str) -> list[int]:
    """Token ids of `text`; special-token markup in `text` counts as plain text."""
    tokens: list[int] = _encoding().encode_ordinary(text)
    return tokens


def count_tokens(text: str) -> int:
    """Number of tokens in `text`."""
    return len(encode(text)) if text else 0


def count_prompt_tokens(messages: Iterable[Sequence[str]], *, named: int = 0) -> int:
    """Tokens of a chat prompt.

    Each message is given as the strings it carries (role, text, tool arguments ...);
    `named` is the number of messages that carry a participant name.
    """
    total = REPLY_PRIMING_TOKENS + NAME_OVERHEAD_TOKENS * named
    for strings in messages:
        total += MESSAGE_OVERHEAD_TOKENS
        for text in strings:
            total += count_tokens(text)
    return total


@dataclass(frozen=True, slots=True)
class Reply:
    """A generated reply, cut to the caller's token limit."""

    text: str
    """The whole reply; always equal to `"".join(pieces)`."""
    pieces: tuple[str, ...]
    """The reply as streamed: one piece per token, except that a character split across
    tokens is sent whole with the token that completes it."""
    completion_tokens: int
    """Number of tokens generated."""
    truncated: bool
    """True when the caller's token limit cut the reply short."""


@dataclass(frozen=True, slots=True)
class _Draft:
    token_bytes: tuple[bytes, ...]
    pieces: tuple[str, ...]


def generate_reply(
    model: str,
    prompt: str,
    *,
    reply_tokens: int,
    max_tokens: int | None = None,
    opening: str | None = None,
    closing: tuple[str, ...] | None = None,
    fill: bool = True,
) -> Reply:
    """The deterministic reply of `model` to the user message `prompt`.

    The reply is a polite contact-center answer that quotes the start of `prompt` (or begins
    with `opening` when given), followed by whole sentences chosen from a hash of the model
    and the prompt (from `closing` when given, else contact-center filler). It ends on a
    whole sentence within `reply_tokens` tokens, as close to it as sentences allow; only an
    `opening` longer than that goes over it, whole. `max_tokens` cuts it when smaller
    (`truncated`: the only reply that may end mid-sentence). With `fill` false the reply is
    the `opening` alone (small talk does not get filler).
    """
    seed = hashlib.sha256(f"{model}\x00{prompt}".encode("utf-8", "surrogatepass")).digest()
    draft = _draft(
        seed, excerpt(prompt), reply_tokens, opening, closing, not fill and bool(opening)
    )
    total = len(draft.token_bytes)
    if max_tokens is None or max_tokens >= total:
        pieces = draft.pieces
        return Reply("".join(pieces), pieces, total, truncated=False)
    pieces = _decode_pieces(draft.token_bytes[:max_tokens])
    return Reply("".join(pieces), pieces, max_tokens, truncated=True)


def excerpt(text: str) -> str:
    """The first few words of `text` on one line, as quoted in a reply ("" if none)."""
    # Lone surrogates (valid in JSON strings) cannot be encoded in the UTF-8 response.
    text = text.encode("utf-8", "replace").decode("utf-8")
    text = _CONTROL_CHARS.sub(" ", text).replace('"', "'")
    words = text.split()
    kept: list[str] = []
    for word in words[:_EXCERPT_MAX_WORDS]:
        if kept and len(" ".join([*kept, word])) > _EXCERPT_MAX_CHARS:
            break
        kept.append(word)
    quoted = " ".join(kept)
    cut = len(kept) < len(words) or len(quoted) > _EXCERPT_MAX_CHARS
    quoted = quoted[:_EXCERPT_MAX_CHARS].rstrip(".,;:!?")
    return f"{quoted}..." if cut and quoted else quoted


@functools.lru_cache(maxsize=4096)
def _draft(
    seed: bytes,
    quoted: str,
    reply_tokens: int,
    opening: str | None,
    closing: tuple[str, ...] | None,
    opening_only: bool,
) -> _Draft:
    # Cached on the digest and the short excerpt, not the prompt, so that the cache stays
    # small however long the prompts are (an opening is short too).
    if opening_only and opening:
        text = opening
    else:
        text = _compose(seed, quoted, reply_tokens, opening, closing or _SENTENCES)
    enc = _encoding()
    token_bytes = tuple(enc.decode_single_token_bytes(t) for t in encode(text))
    return _Draft(token_bytes, _decode_pieces(token_bytes))


def _compose(
    seed: bytes, quoted: str, reply_tokens: int, opening: str | None, pool: tuple[str, ...]
) -> str:
    """Whole sentences: the opening, then sentences of `pool`, then short ones, to the budget."""
    if opening:
        parts = [opening]
    else:
        greeting = _GREETINGS[_pick(seed, b"greeting", len(_GREETINGS))]
        parts = [f'{greeting} about "{quoted}".' if quoted else f"{greeting}."]
        if count_tokens(parts[0]) > reply_tokens:
            parts = []  # a budget too small for the greeting gets short sentences only
    # Tokens do not cross the spaces before words, so per-sentence counts add up to the
    # count of the whole text; it is checked at the end all the same.
    budget = reply_tokens - (count_tokens(parts[0]) if parts else 0)
    # Whole rounds of the pool while they fit (a sentence repeats only after all the others),
    # then the sentences of one more round that still fit, then at most one of each short one.
    round_ = 0
    while True:
        added_all = True
        for sentence in _shuffled(seed, round_, pool):
            cost = _sentence_tokens(sentence, first=not parts)
            if cost <= budget:
                parts.append(sentence)
                budget -= cost
            else:
                added_all = False
        if not added_all:
            break
        round_ += 1
    for size, group in enumerate(_SHORT):
        choice = group[_pick(seed, b"short%d" % size, len(group))]
        cost = _sentence_tokens(choice, first=not parts)
        if cost <= budget:
            parts.append(choice)
            budget -= cost
    if not parts:
        return _TINY
    text = " ".join(parts)
    while len(parts) > 1 and count_tokens(text) > reply_tokens:
        parts.pop()
        text = " ".join(parts)
    return text


@functools.lru_cache(maxsize=256)
def _sentence_tokens(sentence: str, *, first: bool) -> int:
    return count_tokens(sentence if first else " " + sentence)


def _decode_pieces(token_bytes: Sequence[bytes]) -> tuple[str, ...]:
    # A character can span two tokens (emoji, accented letters): the incremental decoder
    # holds its first bytes back until the token that completes it, and drops a character
    # left incomplete by a token limit.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
    pieces = [piece for chunk in token_bytes if (piece := decoder.decode(chunk))]
    if tail := decoder.decode(b"", final=True):
        pieces.append(tail)
    return tuple(pieces)


def _pick(seed: bytes, label: bytes, n: int) -> int:
    return int.from_bytes(hashlib.sha256(seed + label).digest()[:8], "big") % n


def _shuffled(seed: bytes, round_: int, pool: tuple[str, ...]) -> list[str]:
    # A seeded permutation that does not depend on the `random` module's algorithms.
    salt = seed + round_.to_bytes(4, "big")
    return sorted(pool, key=lambda s: hashlib.sha256(salt + s.encode()).digest())


def token_pieces(text: str) -> tuple[str, ...]:
    """`text` as streamed one token at a time (characters split across tokens kept whole)."""
    enc = _encoding()
    return _decode_pieces(tuple(enc.decode_single_token_bytes(t) for t in encode(text)))
