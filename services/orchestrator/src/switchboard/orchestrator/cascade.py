"""The cascade: a cheap answer that shows low confidence is replaced by a frontier one.

The client is told with a `reset` (cause `cascade`); the next task asks the frontier tier
the same question, numbered after everything the cheap attempt sent.
"""

from switchboard.common.tenants import TenantConfig
from switchboard.orchestrator import tasks
from switchboard.orchestrator.router import CHEAP, FRONTIER, Route
from switchboard.orchestrator.turn_state import TurnState
from switchboard.v1.chat_pb2 import ChatEvent, Reset
from switchboard.v1.events_pb2 import LlmResult, LlmTask


def may_cascade(tenant: TenantConfig, route: Route) -> bool:
    """Whether the cascade may re-run this route's answer on frontier (before the answer)."""
    policy = tenant.model_policy
    return (
        policy.cascade
        and route.classified
        and route.tier == CHEAP
        and FRONTIER in policy.allowed_tiers
    )


def first_cheap_answer(state: TurnState, result: LlmResult) -> bool:
    """Only a first, tool-free cheap answer is judged: nothing shown was built on it."""
    return result.tier == CHEAP and not state.cascaded and not state.exchanges


def escalate(state: TurnState, result: LlmResult, why: str) -> tuple[ChatEvent, LlmTask]:
    """Move `state` to a frontier attempt; returns the client's reset and the next task."""
    turn = state.turn
    sequence = result.last_sequence + 1
    reset = ChatEvent(
        request_id=turn.request_id,
        sequence=sequence,
        reset=Reset(reason="escalating to a stronger model", cause="cascade"),
    )
    state.cascaded = True
    state.texts = []
    state.route = Route(
        FRONTIER,
        f"{state.route.reason}; cascaded to frontier: cheap answer showed {why}",
        state.route.score,
        state.route.classified,
        state.route.signals,
    )
    state.flags.append("cascaded")
    next_task = tasks.next_task(
        state.task,
        messages=list(state.task.messages),
        tier=FRONTIER,
        sequence_base=sequence,
        tools=state.task.tools,
    )
    state.previous_task_id, state.task = state.task.task_id, next_task
    return reset, next_task
