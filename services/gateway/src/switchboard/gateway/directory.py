"""Which conversations a tenant has, so that Chat answers NOT_FOUND for any other id.

A conversation is known to its tenant from the moment the gateway started it: a marker is
written (Redis in production) before its first turn is published, so that a follow-up on any
replica finds it at once, long before the memory service has stored the turn. Markers expire
after a quiet period; on a miss the memory service, which keeps conversations for the
tenant's retention, decides (and the marker is written again). Another tenant's conversation,
a deleted one and a made-up id are all simply unknown: nothing tells them apart.
"""

import logging
from typing import Any, Protocol

import grpc

from switchboard.v1.memory_pb2 import MemoryGetConversationRequest

log = logging.getLogger(__name__)


class DirectoryUnavailableError(Exception):
    """The directory (Redis, or the memory service behind it) could not answer in time."""


class ConversationDirectory(Protocol):
    """The conversations of each tenant."""

    async def known(self, tenant_id: str, conversation_id: str) -> bool:
        """Whether the tenant has this conversation (using it keeps it known longer)."""
        ...

    async def add(self, tenant_id: str, conversation_id: str) -> None:
        """Record a conversation the gateway is starting for the tenant."""
        ...

    async def remove(self, tenant_id: str, conversation_id: str) -> None:
        """Forget a deleted conversation; forgetting an unknown one is harmless."""
        ...


class ConversationReader(Protocol):
    """The part of the memory service's stub the fallback uses."""

    def GetConversation(self, request: MemoryGetConversationRequest, *, timeout: float) -> Any: ...


# Memory's answers that mean "this tenant has no such conversation" (an id memory refuses
# cannot name a stored conversation either).
_UNKNOWN = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)


class MemoryBackedDirectory:
    """Markers first; on a miss, the memory service (a conversation it has is marked again)."""

    def __init__(
        self, markers: ConversationDirectory, memory: ConversationReader, timeout_s: float
    ) -> None:
        self._markers = markers
        self._memory = memory
        self._timeout_s = timeout_s

    async def known(self, tenant_id: str, conversation_id: str) -> bool:
        """Whether the tenant has the conversation; raises DirectoryUnavailableError."""
        if await self._markers.known(tenant_id, conversation_id):
            return True
        # Only on a miss (an old conversation, or an unknown id): GetConversation is the
        # memory service's only per-conversation read for the gateway.
        try:
            await self._memory.GetConversation(
                MemoryGetConversationRequest(tenant_id=tenant_id, conversation_id=conversation_id),
                timeout=self._timeout_s,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _UNKNOWN:
                return False
            log.warning("memory cannot tell whether %s exists: %s", conversation_id, exc.code())
            raise DirectoryUnavailableError(
                "the conversation store is unavailable; retry later"
            ) from exc
        await self._markers.add(tenant_id, conversation_id)
        return True

    async def add(self, tenant_id: str, conversation_id: str) -> None:
        """Mark a conversation the gateway starts."""
        await self._markers.add(tenant_id, conversation_id)

    async def remove(self, tenant_id: str, conversation_id: str) -> None:
        """Drop the marker of a conversation memory deleted."""
        await self._markers.remove(tenant_id, conversation_id)
