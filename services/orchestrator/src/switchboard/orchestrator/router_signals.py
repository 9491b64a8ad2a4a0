"""Labelled routing examples from a tenant's own traffic, for `make train-router EXTRA=...`.

    python -m switchboard.orchestrator.router_signals --tenant demo --out signals.jsonl

The platform already records, per turn and per tenant, what the router needs to learn from:
the memory service stores every turn's (redacted) user message with the tier, the routing
reason (which says when the cascade re-ran a cheap answer on frontier), the finish reason
(a handoff) and the rating a user gave (SubmitFeedback). This module turns those records into
labels:

- frontier: a classified-cheap turn that the cascade escalated, that was rated down, that the
  next turn handed off to a human, or that the user's next message says did not help;
- cheap: a frontier turn whose answer was short and rated up (the cheap model would have
  done), and a cheap turn rated up (a confirmation).

Turns pinned to a tier (by the client or the tenant) teach nothing about the classifier and
are skipped. The export reads the memory service's MongoDB collection `messages`, one tenant
at a time (every query filters by tenant), bounded by `--limit`.
"""

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from switchboard.orchestrator.router import CHEAP, FRONTIER
from switchboard.v1.chat_pb2 import ROLE_ASSISTANT, ROLE_USER

HANDOFF = "handoff"
# A classified route's reason starts with one of these (router.py, learned_router.py).
CLASSIFIED_PREFIXES = ("complexity ", "learned p(complex)")
CASCADED = "cascaded to frontier"
_DID_NOT_HELP = re.compile(
    r"\b(?:(?:that|this|it) (?:didn't|did not|doesn't|does not) (?:help|work|answer)"
    r"|not what i (?:asked|meant)|you(?:'re| are) not (?:listening|helping)|still (?:not|doesn't)"
    r"|that's wrong|that is wrong|wrong answer|useless|makes no sense)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class TurnRecord:
    """One stored turn: the user's message and what became of the reply."""

    conversation_id: str
    request_id: str
    position: int
    user_text: str
    tier: str
    routing_reason: str
    finish_reason: str
    output_tokens: int
    rating: str  # RATING_UP, RATING_DOWN or ""


def label_turns(
    tenant_id: str,
    turns: Iterable[TurnRecord],
    *,
    short_answer_tokens: int = 80,
    history_turns: int = 2,
) -> list[dict[str, Any]]:
    """Labelled examples (router_train.jsonl rows) from one tenant's turns."""
    by_conversation: dict[str, list[TurnRecord]] = {}
    for turn in turns:
        by_conversation.setdefault(turn.conversation_id, []).append(turn)
    rows: list[dict[str, Any]] = []
    for conversation in by_conversation.values():
        conversation.sort(key=lambda t: t.position)
        for i, turn in enumerate(conversation):
            if not turn.routing_reason.startswith(CLASSIFIED_PREFIXES) or not turn.user_text:
                continue
            following = conversation[i + 1] if i + 1 < len(conversation) else None
            label, why = _label(turn, following, short_answer_tokens)
            if label is None:
                continue
            history = [t.user_text for t in conversation[max(0, i - history_turns) : i]]
            row: dict[str, Any] = {
                "id": f"traffic-{tenant_id}-{turn.request_id}",
                "split": "traffic",
                "expected": label,
                "text": turn.user_text,
                "signal": why,
                "tenant": tenant_id,
            }
            if history:
                row["history"] = history
            rows.append(row)
    return rows


def _label(
    turn: TurnRecord, following: TurnRecord | None, short_answer_tokens: int
) -> tuple[str | None, str]:
    if CASCADED in turn.routing_reason:
        return FRONTIER, "cheap answer escalated by the cascade"
    if turn.tier == CHEAP:
        if turn.rating == "RATING_DOWN":
            return FRONTIER, "cheap answer rated down"
        if following is not None and following.finish_reason == HANDOFF:
            return FRONTIER, "cheap answer followed by a handoff"
        if following is not None and _DID_NOT_HELP.search(following.user_text):
            return FRONTIER, "cheap answer followed by 'that didn't help'"
        if turn.rating == "RATING_UP":
            return CHEAP, "cheap answer rated up"
    if (
        turn.tier == FRONTIER
        and turn.rating == "RATING_UP"
        and 0 < turn.output_tokens <= short_answer_tokens
    ):
        return CHEAP, "short frontier answer rated up"
    return None, ""


def records_of(messages: Sequence[dict[str, Any]]) -> list[TurnRecord]:
    """TurnRecords from the memory service's message documents (user + assistant pairs)."""
    pairs: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for doc in messages:
        key = (str(doc.get("conversation_id", "")), str(doc.get("request_id", "")))
        role = {ROLE_USER: "user", ROLE_ASSISTANT: "assistant"}.get(doc.get("role", 0))
        if role is not None:
            pairs.setdefault(key, {})[role] = doc
    records = []
    for (conversation_id, request_id), pair in pairs.items():
        user, assistant = pair.get("user"), pair.get("assistant")
        if user is None or assistant is None:
            continue
        feedback = assistant.get("feedback") or {}
        records.append(
            TurnRecord(
                conversation_id=conversation_id,
                request_id=request_id,
                position=int(user.get("position", 0)),
                user_text=str(user.get("text", "")),
                tier=str(assistant.get("tier", "")),
                routing_reason=str(assistant.get("routing_reason", "")),
                finish_reason=str(assistant.get("finish_reason", "")),
                output_tokens=int(assistant.get("output_tokens", 0)),
                rating=str(feedback.get("rating", "")),
            )
        )
    return records


async def _read_messages(
    mongo_url: str, database: str, tenant_id: str, limit: int, timeout_ms: int
) -> list[dict[str, Any]]:
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_url, serverSelectionTimeoutMS=timeout_ms, timeoutMS=timeout_ms
    )
    try:
        fields = {
            k: 1
            for k in (
                "conversation_id",
                "request_id",
                "role",
                "text",
                "position",
                "tier",
                "routing_reason",
                "finish_reason",
                "output_tokens",
                "feedback",
            )
        }
        cursor = client[database]["messages"].find({"tenant_id": tenant_id}, fields).limit(limit)
        return await cursor.to_list()
    finally:
        await client.close()


def main(argv: Sequence[str] | None = None) -> int:
    from switchboard.orchestrator.settings import OrchestratorSettings

    parser = argparse.ArgumentParser(prog="python -m switchboard.orchestrator.router_signals")
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=200_000, help="messages read at most")
    parser.add_argument("--short-answer-tokens", type=int, default=80)
    args = parser.parse_args(argv)
    settings = OrchestratorSettings()
    messages = asyncio.run(
        _read_messages(
            settings.mongo_url,
            settings.database,
            args.tenant,
            args.limit,
            settings.mongo_timeout_ms,
        )
    )
    rows = label_turns(
        args.tenant, records_of(messages), short_answer_tokens=args.short_answer_tokens
    )
    header = {
        "_header": f"Routing labels exported from tenant {args.tenant}'s traffic "
        "(router_signals.py): redacted user messages labelled by the cascade, handoffs, "
        "'that didn't help' turns and ratings."
    }
    args.out.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [header, *rows]),
        encoding="utf-8",
    )
    counts = {label: sum(r["expected"] == label for r in rows) for label in (CHEAP, FRONTIER)}
    print(f"{len(messages)} messages read, {len(rows)} labelled turns {counts} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
