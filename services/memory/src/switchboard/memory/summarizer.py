"""Asks the cheap tier for rolling summaries and stores what comes back."""

import logging
from collections.abc import Awaitable, Callable

from switchboard.conversation.tokens import remembering_counter
from switchboard.memory.metrics import SUMMARIES
from switchboard.memory.settings import MemorySettings
from switchboard.memory.store import ConversationStore, SavedTurn
from switchboard.memory.summaries import plan_summary, summary_task
from switchboard.v1.events_pb2 import LlmResult, LlmTask

log = logging.getLogger(__name__)


PublishTask = Callable[[str, LlmTask], Awaitable[None]]


class Summarizer:
    """Decides after each stored turn whether a conversation needs a new summary."""

    def __init__(
        self,
        store: ConversationStore,
        publish_task: PublishTask,
        settings: MemorySettings,
        task_topic: str,
        result_topic: str,
    ) -> None:
        self._store = store
        self._publish_task = publish_task
        self._settings = settings
        self._task_topic = task_topic
        self._result_topic = result_topic
        self._count_tokens = remembering_counter(settings.token_count_cache_max_bytes)

    def _count(self, text: str) -> int:
        return self._count_tokens(text, self._settings.summary_count_model)

    async def after_turn(
        self, tenant_id: str, conversation_id: str, saved: SavedTurn | None = None
    ) -> str | None:
        """Request a summary when the unsummarised part is too long; the task id, if any.

        `saved` is the state the turn's write left, which spares reading it again.
        """
        settings = self._settings
        if saved is not None and saved.summary is not None:
            previous, known = saved.summary, saved.unsummarised
        else:
            previous, known = await self._store.summary_state(tenant_id, conversation_id), None
        if known is not None:
            unsummarised = list(known[: settings.context_scan_limit])
        else:
            unsummarised = await self._store.unsummarised(
                tenant_id, conversation_id, previous.until_position, settings.context_scan_limit
            )
        plan = plan_summary(
            previous,
            unsummarised,
            self._count,
            trigger_tokens=settings.summary_trigger_tokens,
            trigger_messages=settings.summary_trigger_messages,
            keep_recent=settings.summary_keep_recent_messages,
            max_input_tokens=settings.summary_max_input_tokens,
        )
        if plan is None:
            return None
        task = summary_task(
            tenant_id=tenant_id,
            conversation_id=conversation_id,
            previous=previous,
            plan=plan,
            tier=settings.summary_tier,
            result_topic=self._result_topic,
            max_output_tokens=settings.summary_max_output_tokens,
        )
        claimed = await self._store.claim_summary(
            tenant_id,
            conversation_id,
            task.task_id,
            previous,
            plan,
            settings.summary_task_timeout_s,
        )
        if not claimed:
            return None  # one is on its way already
        try:
            await self._publish_task(self._task_topic, task)
        except BaseException:
            # Not sent: free the claim so that the redelivered turn asks again.
            await self._store.release_summary(tenant_id, conversation_id, task.task_id)
            raise
        SUMMARIES.labels("requested").inc()
        log.info(
            "summary of %s requested: %d messages (%d unsummarised tokens)",
            conversation_id,
            len(plan.messages),
            plan.unsummarised_tokens,
        )
        return task.task_id

    async def on_result(self, result: LlmResult) -> None:
        """Store a finished summary as the next version, or free a failed task's claim."""
        if result.HasField("error"):
            SUMMARIES.labels("failed").inc()
            log.warning(
                "summary of %s failed: %s %s",
                result.conversation_id,
                result.error.code,
                result.error.message,
            )
            await self._store.release_summary(
                result.tenant_id, result.conversation_id, result.task_id
            )
            return
        if not result.text.strip():
            SUMMARIES.labels("empty").inc()
            await self._store.release_summary(
                result.tenant_id, result.conversation_id, result.task_id
            )
            return
        version = await self._store.save_summary(
            result.tenant_id,
            result.conversation_id,
            result.task_id,
            result.text.strip(),
            self._settings.summary_versions_kept,
            usage={
                "model": result.model,
                "input_tokens": result.usage.input_tokens,
                "output_tokens": result.usage.output_tokens,
                "cost_usd": result.cost_usd,
            },
        )
        if version is None:
            # Another memory deployment's task, a redelivery, or a deleted conversation.
            SUMMARIES.labels("ignored").inc()
            return
        SUMMARIES.labels("stored").inc()
        log.info("summary v%d of %s stored", version, result.conversation_id)
