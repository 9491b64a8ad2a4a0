"""The turn logic, free of I/O: routing, the LLM task, the end of a turn."""

import uuid
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from switchboard.v1.chat_pb2 import ROLE_SYSTEM, ROLE_USER, ChatEvent, Done
from switchboard.v1.events_pb2 import (
    ChatMessage,
    CompletedTurn,
    GenerationParams,
    LlmResult,
    LlmTask,
    TurnRequest,
)
from switchboard.v1.memory_pb2 import ConversationContext


@dataclass(frozen=True)
class Route:
    """The tier a turn runs on and why."""

    tier: str
    reason: str


def choose_route(turn: TurnRequest, default_tier: str) -> Route:
    """An explicit tier wins; otherwise the default tier."""
    requested = turn.options.tier
    if requested and requested != "auto":
        return Route(requested, "tier requested by the client")
    return Route(default_tier, "default tier")


def build_task(
    turn: TurnRequest,
    context: ConversationContext,
    route: Route,
    *,
    result_topic: str,
    system_prompt: str,
    default_max_output_tokens: int,
) -> LlmTask:
    """The first LLM task of a turn: system prompt, summary, history, then the message."""
    messages = [ChatMessage(role=ROLE_SYSTEM, text=system_prompt)]
    if context.summary:
        messages.append(
            ChatMessage(
                role=ROLE_SYSTEM, text=f"Summary of the conversation so far: {context.summary}"
            )
        )
    messages.extend(ChatMessage(role=m.role, text=m.text) for m in context.messages)
    messages.append(ChatMessage(role=ROLE_USER, text=turn.message))
    params = GenerationParams(
        max_output_tokens=turn.options.max_output_tokens or default_max_output_tokens
    )
    if turn.options.HasField("temperature"):
        params.temperature = turn.options.temperature
    return LlmTask(
        task_id=str(uuid.uuid4()),
        tenant_id=turn.tenant_id,
        conversation_id=turn.conversation_id,
        request_id=turn.request_id,
        tier=route.tier,
        messages=messages,
        params=params,
        reply_topic=turn.reply_topic,
        result_topic=result_topic,
        # The gateway sends `started` as event 0; the worker's events follow.
        sequence_base=0,
        metadata=turn.options.metadata,
    )


def final_event(result: LlmResult) -> ChatEvent:
    """The event that ends the client's stream: `done`, or `error` when the task failed."""
    sequence = result.last_sequence + 1
    if result.HasField("error"):
        return ChatEvent(request_id=result.request_id, sequence=sequence, error=result.error)
    return ChatEvent(
        request_id=result.request_id,
        sequence=sequence,
        done=Done(
            model=result.model,
            tier=result.tier,
            finish_reason=result.finish_reason,
            usage=result.usage,
            cost_usd=result.cost_usd,
        ),
    )


def completed_turn(turn: TurnRequest, route: Route, result: LlmResult) -> CompletedTurn:
    """The record of a successful turn for the memory service."""
    completed_at = Timestamp()
    completed_at.GetCurrentTime()
    return CompletedTurn(
        tenant_id=turn.tenant_id,
        conversation_id=turn.conversation_id,
        request_id=turn.request_id,
        user_id=turn.user_id,
        user_message=turn.message,
        assistant_message=result.text,
        model=result.model,
        tier=route.tier,
        routing_reason=route.reason,
        usage=result.usage,
        cost_usd=result.cost_usd,
        finish_reason=result.finish_reason,
        accepted_at=turn.accepted_at,
        completed_at=completed_at,
    )
