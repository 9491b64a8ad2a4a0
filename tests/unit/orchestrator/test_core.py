from switchboard.orchestrator.core import (
    Route,
    build_task,
    choose_route,
    completed_turn,
    final_event,
)
from switchboard.v1.chat_pb2 import (
    ROLE_ASSISTANT,
    ROLE_SYSTEM,
    ROLE_USER,
    ChatOptions,
    Error,
    Message,
    Usage,
)
from switchboard.v1.events_pb2 import LlmResult, TurnRequest
from switchboard.v1.memory_pb2 import ConversationContext


def turn(**options: object) -> TurnRequest:
    return TurnRequest(
        tenant_id="demo",
        conversation_id="c1",
        request_id="r1",
        user_id="u1",
        message="Where is my parcel?",
        reply_topic="chat.replies.gw",
        options=ChatOptions(**options),  # type: ignore[arg-type]
    )


def test_an_explicit_tier_wins_and_auto_falls_back_to_the_default() -> None:
    assert choose_route(turn(tier="frontier"), "cheap") == Route(
        "frontier", "tier requested by the client"
    )
    assert choose_route(turn(tier="auto"), "cheap").tier == "cheap"
    assert choose_route(turn(), "cheap").tier == "cheap"


def test_the_task_holds_system_prompt_summary_history_then_the_message() -> None:
    context = ConversationContext(
        summary="Customer asked about a refund.",
        messages=[Message(role=ROLE_USER, text="Hi"), Message(role=ROLE_ASSISTANT, text="Hello!")],
    )
    task = build_task(
        turn(max_output_tokens=100, temperature=0.3, metadata={"k": "v"}),
        context,
        Route("cheap", "default tier"),
        result_topic="llm.results",
        system_prompt="Be kind.",
        default_max_output_tokens=512,
    )
    assert [(m.role, m.text) for m in task.messages] == [
        (ROLE_SYSTEM, "Be kind."),
        (ROLE_SYSTEM, "Summary of the conversation so far: Customer asked about a refund."),
        (ROLE_USER, "Hi"),
        (ROLE_ASSISTANT, "Hello!"),
        (ROLE_USER, "Where is my parcel?"),
    ]
    assert task.tier == "cheap" and task.reply_topic == "chat.replies.gw"
    assert task.result_topic == "llm.results"
    assert task.params.max_output_tokens == 100
    assert abs(task.params.temperature - 0.3) < 1e-6
    assert dict(task.metadata) == {"k": "v"}
    assert task.task_id


def test_defaults_apply_when_the_client_sets_no_limits() -> None:
    task = build_task(
        turn(),
        ConversationContext(),
        Route("cheap", "x"),
        result_topic="r",
        system_prompt="s",
        default_max_output_tokens=512,
    )
    assert task.params.max_output_tokens == 512
    assert not task.params.HasField("temperature")
    assert len(task.messages) == 2


def test_a_successful_result_ends_with_done_after_the_workers_last_event() -> None:
    result = LlmResult(
        request_id="r1",
        model="m",
        tier="cheap",
        finish_reason="stop",
        usage=Usage(input_tokens=10, output_tokens=5),
        cost_usd=0.01,
        last_sequence=7,
        text="Here you go.",
    )
    event = final_event(result)
    assert event.sequence == 8 and event.WhichOneof("event") == "done"
    assert (event.done.model, event.done.tier, event.done.usage.output_tokens) == ("m", "cheap", 5)
    record = completed_turn(turn(), Route("cheap", "default tier"), result)
    assert (record.user_message, record.assistant_message) == (
        "Where is my parcel?",
        "Here you go.",
    )
    assert record.routing_reason == "default tier" and record.tenant_id == "demo"
    assert record.completed_at.seconds > 0


def test_a_failed_result_ends_with_its_error() -> None:
    event = final_event(
        LlmResult(request_id="r1", last_sequence=2, error=Error(code="UNAVAILABLE", message="down"))
    )
    assert event.sequence == 3 and event.error.code == "UNAVAILABLE"
