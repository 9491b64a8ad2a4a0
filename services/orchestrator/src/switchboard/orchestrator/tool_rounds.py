"""What the client sees of a tool round: `running` for each call the model asked for, then
each outcome's status, and a handoff when a tool opened a ticket. The engine decides what
the model sees of the results."""

from switchboard.common.redaction import ALL_KINDS, Redactor
from switchboard.orchestrator.ports import Outbox
from switchboard.orchestrator.tools import ToolContext, ToolOutcome, ToolRegistry
from switchboard.v1.chat_pb2 import ChatEvent, Handoff, ToolStatus
from switchboard.v1.events_pb2 import LlmResult, TurnRequest


async def call_tools(
    outbox: Outbox, turn: TurnRequest, result: LlmResult, registry: ToolRegistry
) -> tuple[list[ToolOutcome], int]:
    """Announce and run the calls of `result`; returns the outcomes and the last sequence."""
    context = ToolContext(turn.tenant_id, turn.conversation_id, turn.request_id, turn.user_id)
    sequence = result.last_sequence
    for call in result.tool_calls:
        sequence += 1
        await outbox.reply(
            turn,
            ChatEvent(
                request_id=turn.request_id,
                sequence=sequence,
                tool=ToolStatus(name=call.name, status="running"),
            ),
        )
    outcomes = await registry.call_all(list(result.tool_calls), context)
    return outcomes, sequence


async def announce(
    outbox: Outbox, turn: TurnRequest, outcome: ToolOutcome, sequence: int, redactor: Redactor
) -> int:
    """Tell the client how a call ended (and of its handoff); returns the last sequence."""
    sequence += 1
    await outbox.reply(
        turn,
        ChatEvent(
            request_id=turn.request_id,
            sequence=sequence,
            tool=ToolStatus(name=outcome.call.name, status=outcome.status),
        ),
    )
    if outcome.handoff is not None:
        sequence += 1
        await outbox.reply(
            turn,
            ChatEvent(
                request_id=turn.request_id,
                sequence=sequence,
                handoff=Handoff(
                    reason=redactor.redact(outcome.handoff.reason, ALL_KINDS).text,
                    ticket_id=outcome.handoff.ticket_id,
                ),
            ),
        )
    return sequence
