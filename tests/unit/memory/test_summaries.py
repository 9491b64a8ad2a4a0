from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from switchboard.conversation.records import StoredMessage, SummaryState
from switchboard.memory.settings import MemorySettings
from switchboard.memory.summaries import (
    PURPOSE_METADATA_KEY,
    PURPOSE_SUMMARY,
    plan_summary,
    summary_task,
)
from switchboard.v1.chat_pb2 import ROLE_ASSISTANT, ROLE_SYSTEM, ROLE_USER

NOW = datetime.now(UTC)


def words(text: str) -> int:
    return len(text.split())


def messages(n: int, size: int = 10) -> list[StoredMessage]:
    return [
        StoredMessage(
            position=i + 1,
            request_id=f"r{i // 2}",
            role=ROLE_USER if i % 2 == 0 else ROLE_ASSISTANT,
            text=" ".join([f"w{i}"] * size),
            created_at=NOW,
        )
        for i in range(n)
    ]


def plan(previous: SummaryState, unsummarised: list[StoredMessage], **overrides: int):  # type: ignore[no-untyped-def]
    options = {
        "trigger_tokens": 50,
        "trigger_messages": 100,
        "keep_recent": 2,
        "max_input_tokens": 1000,
        **overrides,
    }
    return plan_summary(previous, unsummarised, words, **options)


def test_nothing_is_summarised_until_the_threshold_is_passed() -> None:
    assert plan(SummaryState(), messages(5)) is None  # 50 tokens: not more than 50
    planned = plan(SummaryState(), messages(6))  # 60 tokens
    assert planned is not None
    assert [m.position for m in planned.messages] == [1, 2, 3, 4]  # the newest 2 stay verbatim
    assert planned.last.position == 4 and planned.unsummarised_tokens == 60


def test_many_short_messages_are_summarised_before_they_pass_the_tokens() -> None:
    # 12 one-token messages: far under 50 tokens, but more than 10 messages.
    assert plan(SummaryState(), messages(10, size=1), trigger_messages=10) is None
    planned = plan(SummaryState(), messages(12, size=1), trigger_messages=10)
    assert planned is not None
    assert [m.position for m in planned.messages] == list(range(1, 11))  # newest 2 stay
    assert planned.unsummarised_tokens == 12


def test_recent_messages_alone_are_never_summarised() -> None:
    assert plan(SummaryState(), messages(2, size=100), keep_recent=2) is None


def test_one_task_reads_no_more_than_its_input_budget() -> None:
    previous = SummaryState(version=3, text=" ".join(["s"] * 20), until_position=0)
    planned = plan(previous, messages(12), max_input_tokens=55)
    assert planned is not None
    # 55 - 20 summary tokens leaves room for three messages of 10.
    assert [m.position for m in planned.messages] == [1, 2, 3]


def test_a_single_oversized_message_is_still_summarised() -> None:
    planned = plan(SummaryState(), messages(4, size=100), max_input_tokens=10)
    assert planned is not None and [m.position for m in planned.messages] == [1]


def test_the_task_goes_to_the_cheap_tier_and_comes_back_on_the_memory_topic() -> None:
    unsummarised = messages(6)
    planned = plan(SummaryState(version=1, text="Earlier: hello."), unsummarised)
    assert planned is not None
    task = summary_task(
        tenant_id="acme",
        conversation_id="c1",
        previous=SummaryState(version=1, text="Earlier: hello."),
        plan=planned,
        tier="cheap",
        result_topic="p.memory.summaries",
        max_output_tokens=200,
    )
    assert (task.tier, task.result_topic, task.reply_topic) == ("cheap", "p.memory.summaries", "")
    assert (task.tenant_id, task.conversation_id) == ("acme", "c1")
    assert task.request_id == f"summary:{task.task_id}"
    assert task.metadata[PURPOSE_METADATA_KEY] == PURPOSE_SUMMARY
    assert [m.role for m in task.messages] == [ROLE_SYSTEM, ROLE_USER]
    assert "150 words" in task.messages[0].text
    prompt = task.messages[1].text
    assert "Previous summary:\nEarlier: hello." in prompt
    assert "Customer: w0" in prompt and "Assistant: w1" in prompt
    assert "w4" not in prompt  # kept verbatim, not summarised
    assert task.params.max_output_tokens == 200


def test_the_same_summary_asked_twice_is_the_same_task() -> None:
    previous = SummaryState(version=1, text="Earlier: hello.")
    planned = plan(previous, messages(6))
    assert planned is not None

    def task_for(state: SummaryState, conversation: str = "c1") -> str:
        assert planned is not None
        return summary_task(
            tenant_id="acme",
            conversation_id=conversation,
            previous=state,
            plan=planned,
            tier="cheap",
            result_topic="t",
            max_output_tokens=200,
        ).task_id

    # A retried or redelivered turn recognises its own claim by the id ...
    assert task_for(previous) == task_for(previous)
    # ... while another base version or another conversation is another summary.
    assert task_for(SummaryState(version=2, text="x")) != task_for(previous)
    assert task_for(previous, "c2") != task_for(previous)


def test_a_message_trigger_past_the_window_is_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="summary_trigger_messages \\(40\\) must be below"):
        MemorySettings(summary_trigger_messages=40, recent_messages=40)
    with pytest.raises(ValidationError, match="cache_max_messages \\(20\\)"):
        MemorySettings(cache_max_messages=20)
    assert MemorySettings(summary_trigger_messages=19, cache_max_messages=20)
