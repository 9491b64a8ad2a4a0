"""Rolling summaries: when to summarise, what, and the LLM task that does it (no I/O).

A conversation's summary covers every message up to a position; the messages after it are
"unsummarised". When they pass `trigger_tokens`, or number more than `trigger_messages`, the
oldest of them (all but the newest `keep_recent` messages, and no more than fit
`max_input_tokens` together with the previous summary) are folded into a new summary by the
cheap tier. The result comes back on the memory service's own result topic and becomes the
next version.
"""

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from switchboard.conversation.records import StoredMessage, SummaryState
from switchboard.v1.chat_pb2 import ROLE_ASSISTANT, ROLE_SYSTEM, ROLE_USER
from switchboard.v1.events_pb2 import ChatMessage, GenerationParams, LlmTask

PURPOSE_METADATA_KEY = "switchboard.purpose"
PURPOSE_SUMMARY = "conversation-summary"

INSTRUCTIONS = (
    "You maintain the running summary of a customer-support conversation, for the assistant "
    "that continues it. Rewrite the previous summary and the new messages into one summary "
    "of at most {words} words. Keep the customer's name, order and ticket numbers, dates, "
    "amounts, what the customer wants, and what was already promised or done. Write plain "
    "prose in the conversation's language, with no preamble."
)
_SUMMARY_NAMESPACE = uuid.UUID("5b0c8f1e-2f57-4c35-9d1f-6a3c1f0e7a21")
_SPEAKERS: dict[int, str] = {ROLE_USER: "Customer", ROLE_ASSISTANT: "Assistant"}


@dataclass(frozen=True)
class SummaryPlan:
    """The messages a new summary folds in, oldest first."""

    messages: tuple[StoredMessage, ...]
    unsummarised_tokens: int

    @property
    def last(self) -> StoredMessage:
        """The last message the new summary covers."""
        return self.messages[-1]


def transcript_line(message: StoredMessage) -> str:
    """One message as the summariser reads it."""
    return f"{_SPEAKERS.get(message.role, 'Note')}: {message.text}"


def plan_summary(
    previous: SummaryState,
    unsummarised: Sequence[StoredMessage],
    count: Callable[[str], int],
    *,
    trigger_tokens: int,
    trigger_messages: int,
    keep_recent: int,
    max_input_tokens: int,
) -> SummaryPlan | None:
    """The next summary to ask for, or None while the unsummarised part is small enough.

    The message count matters as much as the tokens: a conversation of many short turns
    stays under `trigger_tokens` long after its unsummarised messages outgrew the window
    that the conversation document keeps, and every context read then reads the messages
    collection (see `MemorySettings.summary_trigger_messages`).
    """
    costs = [count(m.text) for m in unsummarised]
    total = sum(costs)
    if total <= trigger_tokens and len(unsummarised) <= trigger_messages:
        return None
    foldable = len(unsummarised) - keep_recent
    if foldable <= 0:
        return None
    budget = max_input_tokens - count(previous.text)
    chosen: list[StoredMessage] = []
    for message, cost in zip(unsummarised[:foldable], costs, strict=False):
        if chosen and cost > budget:
            break
        chosen.append(message)  # the first message goes in even if alone it is too long
        budget -= cost
    return SummaryPlan(tuple(chosen), total)


def summary_task_id(
    tenant_id: str, conversation_id: str, base_version: int, last: StoredMessage
) -> str:
    """The task id of the summary that folds everything up to `last` into `base_version`."""
    # A position already tells the role apart (records.position_of).
    name = f"{tenant_id}/{conversation_id}/{base_version}/{last.position}"
    return str(uuid.uuid5(_SUMMARY_NAMESPACE, name))


def summary_task(
    *,
    tenant_id: str,
    conversation_id: str,
    previous: SummaryState,
    plan: SummaryPlan,
    tier: str,
    result_topic: str,
    max_output_tokens: int,
) -> LlmTask:
    """The LLM task that writes the next summary; no client waits on it (no reply topic).

    Its id follows from what it summarises, so that a retried or redelivered turn asking
    for the same summary recognises its own claim and sends the same task again.
    """
    task_id = summary_task_id(tenant_id, conversation_id, previous.version, plan.last)
    new_messages = "\n".join(transcript_line(m) for m in plan.messages)
    # Roughly 0.75 words per token in English prose.
    words = max(20, int(max_output_tokens * 0.75))
    return LlmTask(
        task_id=task_id,
        tenant_id=tenant_id,
        conversation_id=conversation_id,
        request_id=f"summary:{task_id}",
        tier=tier,
        messages=[
            ChatMessage(role=ROLE_SYSTEM, text=INSTRUCTIONS.format(words=words)),
            ChatMessage(
                role=ROLE_USER,
                text=(
                    f"Previous summary:\n{previous.text or '(none yet)'}\n\n"
                    f"New messages:\n{new_messages}"
                ),
            ),
        ],
        params=GenerationParams(max_output_tokens=max_output_tokens, temperature=0.0),
        reply_topic="",
        result_topic=result_topic,
        metadata={PURPOSE_METADATA_KEY: PURPOSE_SUMMARY},
    )
