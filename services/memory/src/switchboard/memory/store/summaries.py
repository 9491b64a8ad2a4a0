"""Rolling summaries: the summary in use, the messages after it, and a summary task's claim,
release and result (stored as the next version)."""

from datetime import timedelta

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from switchboard.conversation.records import StoredMessage, SummaryState
from switchboard.memory.store.base import StoreBase, utcnow
from switchboard.memory.store.keys import Document, conversation_scope, summary_key
from switchboard.memory.store.window import message_of, summary_of, window_after, window_of
from switchboard.memory.summaries import SummaryPlan


class SummaryStore(StoreBase):
    """Rolling summaries."""

    async def summary_state(self, tenant_id: str, conversation_id: str) -> SummaryState:
        """The summary in use (version 0 with no text when there is none yet)."""
        return summary_of(await self._conversation_by_key(tenant_id, conversation_id))

    async def unsummarised(
        self, tenant_id: str, conversation_id: str, after_position: int, limit: int
    ) -> list[StoredMessage]:
        """The oldest `limit` messages after `after_position`, oldest first."""
        conversation = await self._conversation_by_key(tenant_id, conversation_id)
        if conversation is None:
            return []
        after = window_after(conversation["message_count"], window_of(conversation), after_position)
        if after is not None:
            return after[:limit]
        docs = (
            await self._messages.find(
                {
                    **conversation_scope(tenant_id, conversation_id),
                    "position": {"$gt": after_position},
                }
            )
            .sort("position", ASCENDING)
            .limit(limit)
            .to_list()
        )
        return [message_of(d) for d in docs]

    async def claim_summary(
        self,
        tenant_id: str,
        conversation_id: str,
        task_id: str,
        base: SummaryState,
        plan: SummaryPlan,
        stale_after_s: float,
    ) -> bool:
        """Record a summary task as in flight; False when another one (not stale) is.

        Claiming again with the same `task_id` succeeds: a turn whose first attempt claimed
        but failed before (or while) sending the task can send it again.
        """
        async with self._writing(tenant_id, conversation_id):
            # Checked here and written by key, under the conversation's write lock: a
            # conditional filter would make FerretDB 1.x decode every conversation.
            conversation = await self._conversation_by_key(tenant_id, conversation_id)
            if conversation is None:
                return False
            now = utcnow()
            # Only on the summary the plan was made from: a version stored meanwhile makes the
            # plan stale (it would fold messages already covered into a duplicate version).
            if summary_of(conversation).version != base.version:
                return False
            pending = conversation.get("summary_pending")
            if not (
                pending is None
                or pending.get("task_id") == task_id
                or pending["requested_at"] < now - timedelta(seconds=stale_after_s)
            ):
                return False
            await self._conversations.update_one(
                {"_id": conversation["_id"]},
                {
                    "$set": {
                        "summary_pending": {
                            "task_id": task_id,
                            "base_version": base.version,
                            "until_position": plan.last.position,
                            "until_request_id": plan.last.request_id,
                            # The plan folds in every message after the base's coverage:
                            # counted here, as counting them later scans the messages.
                            "covered_messages": base.covered_messages + len(plan.messages),
                            "until_role": plan.last.role,
                            "requested_at": now,
                        }
                    }
                },
            )
            return True

    async def release_summary(self, tenant_id: str, conversation_id: str, task_id: str) -> None:
        """Forget an in-flight summary task (it failed or could not be sent)."""
        async with self._writing(tenant_id, conversation_id):
            await self._release(tenant_id, conversation_id, task_id)

    async def _release(self, tenant_id: str, conversation_id: str, task_id: str) -> None:
        conversation = await self._conversation_by_key(tenant_id, conversation_id)
        if conversation is None:
            return
        pending = conversation.get("summary_pending")
        if pending is not None and pending["task_id"] == task_id:
            await self._conversations.update_one(
                {"_id": conversation["_id"]}, {"$unset": {"summary_pending": ""}}
            )

    async def save_summary(
        self,
        tenant_id: str,
        conversation_id: str,
        task_id: str,
        text: str,
        versions_kept: int,
        usage: Document | None = None,
    ) -> int | None:
        """Store the result of a summary task as the next version; None when the task is
        unknown (stale, already stored, or its conversation was deleted)."""
        async with self._writing(tenant_id, conversation_id):
            scope = conversation_scope(tenant_id, conversation_id)
            conversation = await self._conversation_by_key(tenant_id, conversation_id)
            if conversation is None:
                return None
            pending = conversation.get("summary_pending")
            if pending is None or pending.get("task_id") != task_id:
                return None
            version = int(pending["base_version"]) + 1
            until = int(pending["until_position"])
            now = utcnow()
            covered = pending.get("covered_messages")
            if covered is None:  # claimed before the count was kept with the claim
                covered = await self._messages.count_documents(
                    {**scope, "position": {"$lte": until}}
                )
            try:
                await self._summaries.insert_one(
                    {
                        "_id": summary_key(tenant_id, conversation_id, version),
                        **scope,
                        "version": version,
                        "text": text,
                        "until_position": until,
                        "until_request_id": pending["until_request_id"],
                        "until_role": pending["until_role"],
                        "covered_messages": covered,
                        "task_id": task_id,
                        # Model, tokens and cost of the summary call, for cost reports.
                        **(usage or {}),
                        "created_at": now,
                    }
                )
            except DuplicateKeyError:
                existing = await self._summaries.find_one(
                    {"_id": summary_key(tenant_id, conversation_id, version)}
                )
                if existing is None or existing.get("task_id") != task_id:
                    # Another task wrote this version: this result is stale.
                    await self._release(tenant_id, conversation_id, task_id)
                    return None
                # A redelivered result: the version is stored already; finish the bookkeeping.
            # By key: the pending task was checked above, under the write lock.
            await self._conversations.update_one(
                {"_id": conversation["_id"]},
                {
                    "$set": {
                        "summary": {
                            "version": version,
                            "text": text,
                            "until_position": until,
                            "until_request_id": pending["until_request_id"],
                            "covered_messages": covered,
                            "created_at": now,
                        }
                    },
                    "$unset": {"summary_pending": ""},
                },
            )
            if version > versions_kept:
                # Each version stored retires one, so `versions_kept` remain.
                await self._summaries.delete_one(
                    {"_id": summary_key(tenant_id, conversation_id, version - versions_kept)}
                )
            if await self._deleted_since(scope, pending["requested_at"]):
                await self._summaries.delete_many(scope)
                return None
            return version
