"""Context reads: the summary in use, the newest facts and the newest unsummarised
messages of a conversation, from its window when it holds them."""

from pymongo import DESCENDING

from switchboard.conversation.records import ContextSnapshot
from switchboard.memory.store.base import StoreBase
from switchboard.memory.store.keys import conversation_scope
from switchboard.memory.store.window import (
    message_of,
    newest_facts,
    summary_of,
    window_after,
    window_of,
)
from switchboard.v1.memory_pb2 import Fact


class ContextStore(StoreBase):
    """Context reads."""

    async def context_snapshot(
        self,
        tenant_id: str,
        conversation_id: str,
        scan_limit: int,
        max_facts: int,
        *,
        whole: bool = False,
    ) -> ContextSnapshot:
        """The summary in use, the newest facts and the newest unsummarised messages.

        When the conversation's window of newest messages does not reach back to the
        summary (a summary lags behind), only the window is read unless `whole` is set, and
        the snapshot says it is not `complete`: the window often fills a context already,
        while reading the rest makes FerretDB decode every message of the database.
        """
        scope = conversation_scope(tenant_id, conversation_id)
        conversation = await self._conversation_by_key(tenant_id, conversation_id)
        if conversation is None:
            return ContextSnapshot()
        summary = summary_of(conversation)
        window = window_of(conversation)
        facts: list[Fact] = []
        if max_facts and window is not None and conversation["known_facts_complete"]:
            facts = newest_facts(conversation["known_facts"], max_facts)
        elif max_facts:
            fact_docs = (
                await self._facts.find(scope)
                .sort([("position", DESCENDING), ("rank", DESCENDING)])
                .limit(max_facts)
                .to_list()
            )
            facts = newest_facts(fact_docs, max_facts)
        after = window_after(conversation["message_count"], window, summary.until_position)
        if after is not None:
            return ContextSnapshot(summary, tuple(facts), tuple(after[::-1][:scan_limit]))
        if window is not None and not whole:
            # The window does not reach back to the summary: all of it is unsummarised.
            return ContextSnapshot(
                summary, tuple(facts), tuple(window[::-1][:scan_limit]), len(window) >= scan_limit
            )
        docs = (
            await self._messages.find({**scope, "position": {"$gt": summary.until_position}})
            .sort("position", DESCENDING)
            .limit(scan_limit)
            .to_list()
        )
        return ContextSnapshot(summary, tuple(facts), tuple(message_of(d) for d in docs))
