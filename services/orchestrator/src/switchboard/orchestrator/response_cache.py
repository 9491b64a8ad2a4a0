"""The response cache of FAQ-style first turns: which turns may be answered from it (their
key), and which answers may be put in it. The store itself is a port (RedisResponseCache)."""

import hashlib
import re
import unicodedata
from typing import Any

from switchboard.common.tenants import TenantConfig
from switchboard.orchestrator.router import CHEAP, Route
from switchboard.orchestrator.turn_state import TurnState
from switchboard.v1.events_pb2 import LlmResult, TurnRequest
from switchboard.v1.memory_pb2 import ConversationContext


def cache_key(
    turn: TurnRequest,
    tenant: TenantConfig,
    context: ConversationContext,
    route: Route,
    personal: bool,
    *,
    namespace: str,
    grounding: str = "",
) -> str:
    """The response-cache key of an FAQ-style first turn, or "" when it must not be cached.

    Only first turns (no history), routed to cheap by the classifier, without personal
    data, digits or client options: such questions have one answer for everybody.
    `grounding` identifies the knowledge passages the answer is grounded in.
    """
    if (
        tenant.response_cache_ttl_s <= 0
        or personal
        or context.messages
        or context.summary
        or not route.classified
        or route.tier != CHEAP
        or any(c.isdigit() for c in turn.message)
        or turn.options.metadata
        or turn.options.max_output_tokens
        or turn.options.HasField("temperature")
    ):
        return ""
    normalized = unicodedata.normalize("NFKC", turn.message).casefold()
    normalized = " ".join(re.sub(r"[^\w\s]", " ", normalized).split())
    digest = hashlib.sha256(f"{normalized}\0{grounding}".encode()).hexdigest()[:32]
    return f"sb:{namespace}{turn.tenant_id}:cache:{digest}"


def cacheable(state: TurnState, result: LlmResult, reply: str, redacted: bool) -> bool:
    """Whether a finished answer may be served to the next asker: a plain, complete, first
    answer (no tools, no cascade) with nothing redacted out of it."""
    return bool(
        state.cache_key
        and not state.exchanges
        and not state.cascaded
        and result.finish_reason in ("stop", "end_turn")
        and reply.strip()
        and not redacted
    )


def entry(reply: str, result: LlmResult, citations: list[dict[str, str]]) -> dict[str, Any]:
    """The cached value of an answer, with the passages it was grounded in."""
    return {"text": reply, "model": result.model, "tier": result.tier, "citations": citations}
