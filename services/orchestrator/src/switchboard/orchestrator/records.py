"""Completed-turn records (`chat.turns`): what memory stores and analytics read, with the
tool exchanges redacted of everything."""

from google.protobuf.timestamp_pb2 import Timestamp

from switchboard.common.redaction import ALL_KINDS, Redactor
from switchboard.orchestrator.tools import FAILED, SUCCEEDED, ToolOutcome
from switchboard.orchestrator.turn_state import TurnState
from switchboard.v1.chat_pb2 import Usage
from switchboard.v1.events_pb2 import CompletedTurn, LlmResult, ToolExchange, TurnRequest


def completed(
    turn: TurnRequest,
    *,
    user_message: str,
    reply: str,
    model: str,
    tier: str,
    reason: str,
    usage: Usage,
    cost_usd: float,
    finish_reason: str,
    flags: list[str],
    exchanges: list[dict[str, str]],
    ticket_id: str = "",
) -> CompletedTurn:
    """The record of a finished turn, stamped now."""
    completed_at = Timestamp()
    completed_at.GetCurrentTime()
    return CompletedTurn(
        tenant_id=turn.tenant_id,
        conversation_id=turn.conversation_id,
        request_id=turn.request_id,
        user_id=turn.user_id,
        user_message=user_message,
        assistant_message=reply,
        model=model,
        tier=tier,
        routing_reason=reason,
        usage=usage,
        cost_usd=cost_usd,
        finish_reason=finish_reason,
        accepted_at=turn.accepted_at,
        completed_at=completed_at,
        tool_exchanges=[exchange_message(e) for e in exchanges],
        guardrail_flags=flags,
        handoff_ticket_id=ticket_id,
    )


def generated(state: TurnState, result: LlmResult, reply: str, usage: Usage) -> CompletedTurn:
    """The record of a turn answered by its generations (`reply` redacted already)."""
    return completed(
        state.turn,
        user_message=state.stored_message,
        reply=reply,
        model=result.model,
        tier=result.tier,
        reason=state.route.reason,
        usage=usage,
        cost_usd=state.cost_usd,
        finish_reason=result.finish_reason,
        flags=state.flags,
        exchanges=state.exchanges,
        ticket_id=state.ticket_id,
    )


def without_model(
    turn: TurnRequest,
    user_message: str,
    reply: str,
    reason: str,
    finish_reason: str,
    flags: list[str],
    model: str = "",
    tier: str = "",
    *,
    ticket_id: str = "",
) -> CompletedTurn:
    """The record of a turn answered without a generation (a refusal, a handoff notice, a
    cached answer): no usage, no cost, no tool exchanges."""
    return completed(
        turn,
        user_message=user_message,
        reply=reply,
        model=model,
        tier=tier,
        reason=reason,
        usage=Usage(),
        cost_usd=0.0,
        finish_reason=finish_reason,
        flags=flags,
        exchanges=[],
        ticket_id=ticket_id,
    )


def exchange(outcome: ToolOutcome, redactor: Redactor) -> dict[str, str]:
    """A stored record of a tool call: arguments and result redacted of everything."""
    return {
        "id": outcome.call.id,
        "name": outcome.call.name,
        "arguments": redactor.redact(outcome.call.arguments_json, ALL_KINDS).text,
        "status": outcome.status if outcome.status in (SUCCEEDED, FAILED) else FAILED,
        "result": redactor.redact(outcome.result, ALL_KINDS).text,
    }


def exchange_message(record: dict[str, str]) -> ToolExchange:
    """The protobuf form of a stored tool exchange."""
    message = ToolExchange(status=record["status"], result=record["result"])
    message.call.id = record["id"]
    message.call.name = record["name"]
    message.call.arguments_json = record["arguments"]
    return message
