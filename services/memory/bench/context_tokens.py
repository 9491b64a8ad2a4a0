"""Input tokens per turn: the memory service's context against sending the whole history.

Replays a long, deterministic contact-center conversation through the memory service's
own policies, in process: after each turn the summary planner (`plan_summary`) decides
whether to fold old messages into the rolling summary, and the next turn's context is
what `fit_context` builds (facts, summary, newest messages within the budget). Tokens are
counted with the same offline tokenizer (o200k, gpt-4o-mini's family) and per-message
overhead as `GetContext`. The summary is assumed as long as a summary may be (the
configured `summary_max_output_tokens`) and to arrive one turn after it was requested, as
it does through the cheap tier: both choices are the pessimistic ones.

    python services/memory/bench/context_tokens.py [--turns 40] [--reply-tokens 150]
"""

import argparse
import hashlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from switchboard.conversation.facts import facts_of
from switchboard.conversation.records import StoredMessage, SummaryState
from switchboard.conversation.tokens import count_tokens
from switchboard.conversation.window import PER_MESSAGE_OVERHEAD_TOKENS, fit_context
from switchboard.memory.settings import MemorySettings
from switchboard.memory.summaries import SummaryPlan, plan_summary
from switchboard.v1.chat_pb2 import ROLE_ASSISTANT, ROLE_USER
from switchboard.v1.memory_pb2 import Fact

MODEL = "gpt-4o-mini"
SYSTEM_PROMPT = (
    "You are Acme's customer-support assistant. Be helpful, concise and polite. "
    "Answer in the customer's language."
)
SUMMARY_PREFIX = "Summary of the conversation so far: "
_CUSTOMER = (
    "I checked the tracking page again and the parcel still shows as held at the depot.",
    "The courier never called me, and I was home all day waiting for the delivery.",
    "Can you tell me whether the replacement has been shipped yet, and to which address?",
    "I would also like to know if the refund for the shipping fee has been approved.",
    "My neighbour says a van came by, but nobody rang the bell or left a card.",
    "Is there a way to pick the parcel up myself from the depot tomorrow morning?",
)
_ASSISTANT = (
    "I understand how frustrating this is, and I am sorry for the trouble.",
    "I have checked the shipment and can see it was scanned at the regional depot.",
    "The courier has been asked to contact you before the next delivery attempt.",
    "A replacement order has been created and will ship from our warehouse today.",
    "The shipping fee refund has been approved and will reach your card in 3 to 5 days.",
    "You can collect the parcel at the depot with your ID and the order number.",
    "I have added a note to your case so that nobody asks you to repeat this.",
    "Is there anything else I can help you with regarding this order?",
)


def _pick(options: Sequence[str], *seed: object) -> str:
    digest = hashlib.sha256(repr(seed).encode()).digest()
    return options[int.from_bytes(digest[:4], "big") % len(options)]


def _fill(options: Sequence[str], tokens: int, *seed: object) -> str:
    parts: list[str] = []
    while count_tokens(" ".join(parts), MODEL) < tokens:
        parts.append(_pick(options, *seed, len(parts)))
    return " ".join(parts)


def customer_message(turn: int) -> str:
    if turn == 1:
        return "Hi, my name is Dana Reyes. My order 88123 never arrived and I want a refund."
    return _fill(_CUSTOMER, 40, "customer", turn)


def assistant_message(turn: int, reply_tokens: int) -> str:
    return _fill(_ASSISTANT, reply_tokens, "assistant", turn)


def cost(text: str) -> int:
    return count_tokens(text, MODEL) + PER_MESSAGE_OVERHEAD_TOKENS


@dataclass
class Row:
    turn: int
    full_history: int
    with_memory: int
    summary_tokens: int
    window_messages: int


def replay(turns: int, reply_tokens: int, settings: MemorySettings) -> list[Row]:
    """Input tokens of every turn under both strategies."""
    now = datetime.now(UTC)
    stored: list[StoredMessage] = []
    facts: list[Fact] = []
    summary = SummaryState()
    in_flight: tuple[SummaryPlan, int] | None = None  # a requested summary and its version
    filler = _fill(_ASSISTANT, settings.summary_max_output_tokens, "summary")
    while count_tokens(filler, MODEL) > settings.summary_max_output_tokens:
        filler = filler.rsplit(" ", 1)[0]
    rows = []
    for turn in range(1, turns + 1):
        user_text = customer_message(turn)
        current = cost(SYSTEM_PROMPT) + cost(user_text)
        # Whole history: every earlier message, every time.
        full = current + sum(cost(m.text) for m in stored)
        # Memory: what GetContext returns within the orchestrator's default budget.
        newest_first = [
            m.to_proto() for m in reversed(stored) if m.position > summary.until_position
        ]
        context = fit_context(
            summary.text,
            newest_first,
            settings.default_context_tokens,
            lambda text: count_tokens(text, MODEL),
            facts[-settings.context_max_facts :],
        )
        prefix = count_tokens(SUMMARY_PREFIX, MODEL) + PER_MESSAGE_OVERHEAD_TOKENS
        with_memory = current + context.token_count + (prefix if context.summary else 0)
        rows.append(
            Row(
                turn,
                full,
                with_memory,
                count_tokens(context.summary, MODEL),
                len(context.messages),
            )
        )
        # The turn completes and is stored; a summary asked for last turn arrives now.
        if in_flight is not None:
            plan, version = in_flight
            summary = SummaryState(version, filler, plan.last.position)
            in_flight = None
        messages = (
            StoredMessage(turn * 10 + ROLE_USER, f"r{turn}", ROLE_USER, user_text, now),
            StoredMessage(
                turn * 10 + ROLE_ASSISTANT,
                f"r{turn}",
                ROLE_ASSISTANT,
                assistant_message(turn, reply_tokens),
                now,
            ),
        )
        stored.extend(messages)
        known = {(f.kind, f.value) for f in facts}
        facts.extend(f for f, _ in facts_of(messages) if (f.kind, f.value) not in known)
        plan = plan_summary(
            summary,
            [m for m in stored if m.position > summary.until_position],
            lambda text: count_tokens(text, settings.summary_count_model),
            trigger_tokens=settings.summary_trigger_tokens,
            trigger_messages=settings.summary_trigger_messages,
            keep_recent=settings.summary_keep_recent_messages,
            max_input_tokens=settings.summary_max_input_tokens,
        )
        if plan is not None:
            in_flight = (plan, summary.version + 1)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=40)
    parser.add_argument("--reply-tokens", type=int, default=150, help="assistant reply length")
    args = parser.parse_args(argv)
    settings = MemorySettings()
    rows = replay(args.turns, args.reply_tokens, settings)
    print(
        f"memory: summary past {settings.summary_trigger_tokens} unsummarised tokens, newest "
        f"{settings.summary_keep_recent_messages} messages kept, summary <= "
        f"{settings.summary_max_output_tokens} tokens, context budget "
        f"{settings.default_context_tokens}; replies {args.reply_tokens} tokens; {MODEL} tokenizer"
    )
    header = ("turn", "full history", "with memory", "summary", "window", "saved")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (5, 13, 12, 8, 7, 6), strict=True)))
    shown = sorted({1, 5, 10, 20, 30, args.turns} & set(range(1, args.turns + 1)))
    for row in rows:
        if row.turn in shown:
            saved = 1 - row.with_memory / row.full_history
            print(
                f"{row.turn:>5} {row.full_history:>13,} {row.with_memory:>12,} "
                f"{row.summary_tokens:>8} {row.window_messages:>7} {saved:>6.0%}"
            )
    full_total = sum(r.full_history for r in rows)
    memory_total = sum(r.with_memory for r in rows)
    print(
        f"total {full_total:>13,} {memory_total:>12,} {'':>8} {'':>7} "
        f"{1 - memory_total / full_total:>6.0%}   (input tokens over all {args.turns} turns)"
    )


if __name__ == "__main__":
    sys.exit(main())
