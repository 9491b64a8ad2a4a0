"""The events the orchestrator itself sends a client: answers without a model (refusals,
handoff notices, cached answers), `done` with its citations, and errors. Each function
returns numbered events; the engine decides when to send them."""

from collections.abc import Sequence

from switchboard.common.sequencing import FINAL_SEQUENCE
from switchboard.orchestrator import knowledge as kb
from switchboard.orchestrator.turn_state import TurnState
from switchboard.v1.chat_pb2 import (
    ChatEvent,
    Citation,
    Delta,
    Done,
    Error,
    Handoff,
    Provisional,
    Usage,
)
from switchboard.v1.events_pb2 import LlmResult, TurnRequest


def _numbered(turn: TurnRequest, events: list[ChatEvent], start: int = 1) -> list[ChatEvent]:
    for sequence, event in enumerate(events, start=start):
        event.request_id = turn.request_id
        event.sequence = sequence
    return events


def direct_answer(
    turn: TurnRequest, text: str, *, finish_reason: str, handoff: Handoff | None = None
) -> list[ChatEvent]:
    """A reply without a model (a refusal or a handoff notice), then `done`."""
    events = [ChatEvent(delta=Delta(text=text))]
    if handoff is not None:
        events.append(ChatEvent(handoff=handoff))
    events.append(ChatEvent(done=Done(finish_reason=finish_reason, usage=Usage())))
    return _numbered(turn, events)


def cached_answer(
    turn: TurnRequest, text: str, *, model: str, tier: str, citations: Sequence[Citation] = ()
) -> list[ChatEvent]:
    """An answer from the response cache, then `done` (with the citations it was cached with)."""
    return _numbered(
        turn,
        [
            ChatEvent(delta=Delta(text=text)),
            ChatEvent(
                done=Done(
                    model=model,
                    tier=tier,
                    finish_reason="stop",
                    usage=Usage(),
                    citations=citations,
                )
            ),
        ],
    )


def done(state: TurnState, result: LlmResult, usage: Usage, reply: str) -> ChatEvent:
    """The `done` of a generated answer, with the passages it cites (given in the prompt or
    found by the model's own knowledge searches)."""
    searched = [e["result"] for e in state.exchanges if e["name"] == kb.SEARCH_KNOWLEDGE]
    return ChatEvent(
        request_id=state.turn.request_id,
        sequence=result.last_sequence + 1,
        done=Done(
            model=result.model,
            tier=result.tier,
            finish_reason=result.finish_reason,
            usage=usage,
            cost_usd=state.cost_usd,
            citations=kb.citations_for(
                [*state.citations, *kb.passages_from_tool_results(searched)], reply
            ),
        ),
    )


def generation_error(turn: TurnRequest, result: LlmResult) -> ChatEvent:
    """The error of a generation that failed, after the events it sent."""
    return ChatEvent(
        request_id=turn.request_id, sequence=result.last_sequence + 1, error=result.error
    )


def provisional(turn: TurnRequest, tier: str) -> ChatEvent:
    """`provisional`, the first event of a turn whose answer the cascade may yet replace:
    numbered 1, so its first task numbers its events from 2."""
    return ChatEvent(request_id=turn.request_id, sequence=1, provisional=Provisional(tier=tier))


def error(turn: TurnRequest, code: str, message: str, *, sequence: int = 1) -> ChatEvent:
    """An error that ends the turn for its client."""
    return ChatEvent(
        request_id=turn.request_id, sequence=sequence, error=Error(code=code, message=message)
    )


def set_aside(turn: TurnRequest, reason: str) -> ChatEvent:
    """The error of a turn given up on (dead-lettered), numbered above anything a generation
    can have sent."""
    return error(
        turn,
        "INTERNAL",
        f"the turn could not be processed and was set aside: {reason[:300]}",
        sequence=FINAL_SEQUENCE,
    )
