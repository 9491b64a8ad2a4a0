"""Retention: conversations idle for longer than their tenant's period are deleted.

A sweeper rather than a TTL index: FerretDB 1.x does not implement `expireAfterSeconds`
(it answers NotImplemented), a TTL index could not take a conversation's messages,
summaries and facts with it, and a tenant's new `retention_days` applies at the next sweep
instead of only to documents written afterwards. Each sweep removes at most
`sweep_batch_size` conversations per tenant, through the same hard delete as
`DeleteConversation`; several replicas sweeping at once only repeat idempotent deletes.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from pymongo.errors import PyMongoError

from switchboard.common.tenants import TenantConfig
from switchboard.memory.metrics import EXPIRED
from switchboard.memory.store import ConversationStore

log = logging.getLogger(__name__)


TenantLookup = Callable[[str], Awaitable[TenantConfig | None]]


class RetentionSweeper:
    """Deletes expired conversations, one bounded batch per tenant and sweep."""

    def __init__(
        self,
        store: ConversationStore,
        tenant_lookup: TenantLookup,
        *,
        default_retention_days: int,
        batch_size: int,
        tombstone_keep_s: float,
        on_deleted: Callable[[str, str], None] = lambda tenant, conversation: None,
    ) -> None:
        self._store = store
        self._tenant_lookup = tenant_lookup
        self._default_retention_days = default_retention_days
        self._batch_size = batch_size
        self._tombstone_keep_s = tombstone_keep_s
        self._on_deleted = on_deleted

    async def retention_days(self, tenant_id: str) -> int:
        """The tenant's retention period, or the default for tenants without a configuration."""
        tenant = await self._tenant_lookup(tenant_id)
        return tenant.retention_days if tenant is not None else self._default_retention_days

    async def sweep(self, now: datetime | None = None) -> int:
        """One sweep; returns how many conversations it deleted."""
        now = now or datetime.now(UTC)
        deleted = 0
        for tenant_id in await self._store.tenants_with_conversations():
            cutoff = now - timedelta(days=await self.retention_days(tenant_id))
            for conversation_id in await self._store.idle_conversations(
                tenant_id, cutoff, self._batch_size
            ):
                if await self._store.delete_conversation(tenant_id, conversation_id):
                    self._on_deleted(tenant_id, conversation_id)
                    deleted += 1
        await self._store.purge_tombstones(now - timedelta(seconds=self._tombstone_keep_s))
        EXPIRED.inc(deleted)
        return deleted

    async def run(self, interval_s: float) -> None:
        """Sweep now and then every `interval_s`, until cancelled; failures wait for the next."""
        while True:
            try:
                deleted = await self.sweep()
                if deleted:
                    log.info("retention removed %d conversations", deleted)
            except PyMongoError as exc:
                log.warning("retention sweep failed, next in %.0fs: %s", interval_s, exc)
            except Exception:
                # A bad tenant document must not end retention for everyone.
                log.exception("retention sweep failed, next in %.0fs", interval_s)
            await asyncio.sleep(interval_s)
