"""The answers the engine gives without a model: refusals, handoffs, cached answers and errors.

Each ends the turn for its client (events on the reply topic) and, when it answers, records
the completed turn for memory.
"""

from collections.abc import Callable
from typing import Any

from opentelemetry import trace

from switchboard.common.tenants import TenantConfig
from switchboard.orchestrator import knowledge as kb
from switchboard.orchestrator import metrics, records, replies
from switchboard.orchestrator.ports import Outbox, Tickets
from switchboard.orchestrator.router import Route
from switchboard.orchestrator.tools import ToolContext
from switchboard.v1.chat_pb2 import Handoff
from switchboard.v1.events_pb2 import CompletedTurn, TurnRequest

BLOCKED = "blocked"
HANDOFF = "handoff"


class DirectAnswers:
    """Ends turns without a generation, through the engine's outbox and ticket desk."""

    def __init__(
        self,
        outbox: Outbox,
        tickets: Tickets,
        *,
        completed: Callable[[CompletedTurn], None] | None = None,
    ) -> None:
        self._outbox = outbox
        self._tickets = tickets
        # Told of every record once it is published (the next turn's context, 0084).
        self._completed = completed

    async def answer(
        self,
        turn: TurnRequest,
        stored_message: str,
        text: str,
        *,
        finish_reason: str,
        reason: str,
        flags: list[str],
        ticket_id: str = "",
        handoff: Handoff | None = None,
    ) -> None:
        """Reply without a model: a refusal or a handoff notice, then `done`."""
        trace.get_current_span().set_attribute("switchboard.route.reason", reason)
        await self.complete(
            records.without_model(
                turn, stored_message, text, reason, finish_reason, flags, ticket_id=ticket_id
            )
        )
        for event in replies.direct_answer(
            turn, text, finish_reason=finish_reason, handoff=handoff
        ):
            await self._outbox.reply(turn, event)

    async def hand_off(
        self,
        turn: TurnRequest,
        tenant: TenantConfig,
        stored_message: str,
        reason: str,
        flags: list[str],
    ) -> None:
        """Open a ticket for a person (`reason` already redacted) and tell the client."""
        context = ToolContext(turn.tenant_id, turn.conversation_id, turn.request_id, turn.user_id)
        ticket_id = await self._tickets.open_ticket(context, reason, "normal")
        flags.append("handoff")
        text = tenant.guardrails.handoff_message.replace("{ticket_id}", ticket_id)
        await self.answer(
            turn,
            stored_message,
            text,
            finish_reason=HANDOFF,
            reason=f"handed to a human: {reason}",
            flags=flags,
            ticket_id=ticket_id,
            handoff=Handoff(reason=reason, ticket_id=ticket_id),
        )

    async def from_cache(
        self,
        turn: TurnRequest,
        stored_message: str,
        route: Route,
        cached: dict[str, Any],
        flags: list[str],
    ) -> None:
        """Answer an FAQ-style turn with the response cache's entry, citations included."""
        flags.append("cache-hit")
        text, model, tier = str(cached["text"]), str(cached["model"]), str(cached["tier"])
        citations = kb.citations_for(cached.get("citations", []), text)
        reason = f"{route.reason}; answered from the response cache"
        await self.complete(
            records.without_model(turn, stored_message, text, reason, "stop", flags, model, tier)
        )
        for event in replies.cached_answer(turn, text, model=model, tier=tier, citations=citations):
            await self._outbox.reply(turn, event)

    async def complete(self, record: CompletedTurn) -> None:
        """Count and publish a completed turn (memory stores it)."""
        metrics.record_completed(record)
        await self._outbox.completed(record)
        if self._completed is not None:
            self._completed(record)

    async def fail(self, turn: TurnRequest, code: str, message: str) -> None:
        """End the turn with an `error` event."""
        metrics.TURN_ERRORS.labels(code).inc()
        await self._outbox.reply(turn, replies.error(turn, code, message))

    async def set_aside(self, turn: TurnRequest, error: str) -> None:
        """End a turn whose record was given up on, numbered above any generation's events."""
        metrics.TURN_ERRORS.labels("INTERNAL").inc()
        await self._outbox.reply(turn, replies.set_aside(turn, error))
