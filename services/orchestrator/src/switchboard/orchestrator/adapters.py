"""Thin adapters: the memory service over gRPC and turn state in Redis."""

import logging
from typing import cast

import grpc
from redis.asyncio import Redis

from switchboard.orchestrator.core import Route
from switchboard.v1.events_pb2 import TurnRequest
from switchboard.v1.memory_pb2 import ConversationContext, GetContextRequest
from switchboard.v1.memory_pb2_grpc import MemoryServiceStub

log = logging.getLogger(__name__)


class MemoryClient:
    """Loads conversation context; a slow or absent memory service degrades, never blocks."""

    def __init__(self, target: str, timeout_s: float, max_tokens: int) -> None:
        self._channel = grpc.aio.insecure_channel(target)
        self._stub = MemoryServiceStub(self._channel)
        self._timeout_s = timeout_s
        self._max_tokens = max_tokens

    async def context_for(self, turn: TurnRequest) -> ConversationContext:
        """Summary and recent messages, or an empty degraded context when memory fails."""
        request = GetContextRequest(
            tenant_id=turn.tenant_id,
            conversation_id=turn.conversation_id,
            max_tokens=self._max_tokens,
        )
        try:
            context: ConversationContext = await self._stub.GetContext(
                request, timeout=self._timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            log.warning(
                "memory unavailable for %s (%s): answering without history",
                turn.conversation_id,
                exc.code().name,
            )
            return ConversationContext(degraded=True)
        return context

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()


class RedisTurnStore:
    """What the orchestrator must remember between a task and its result, with a TTL."""

    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self._redis = redis
        self._ttl_s = ttl_s

    @staticmethod
    def _key(request_id: str) -> str:
        return f"sb:turn:{request_id}"

    async def save(self, turn: TurnRequest, route: Route) -> None:
        """Remember a turn whose task is about to be published."""
        key = self._key(turn.request_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={
                    "turn": turn.SerializeToString(),
                    "tier": route.tier,
                    "reason": route.reason,
                },
            )
            pipe.expire(key, self._ttl_s)
            await pipe.execute()

    async def load(self, request_id: str) -> tuple[TurnRequest, Route] | None:
        """The turn and its route, or None when it finished already or expired."""
        fields = cast(dict[bytes, bytes], await self._redis.hgetall(self._key(request_id)))
        if not fields:
            return None
        turn = TurnRequest.FromString(fields[b"turn"])
        return turn, Route(fields[b"tier"].decode(), fields[b"reason"].decode())

    async def forget(self, request_id: str) -> None:
        """Drop a finished turn."""
        await self._redis.delete(self._key(request_id))
