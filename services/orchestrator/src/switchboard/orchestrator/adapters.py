"""Thin adapters: memory over gRPC, turn state and the response cache in Redis, tickets in
MongoDB."""

import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any, cast

import grpc
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from switchboard.common.redaction import ALL_KINDS, Redactor
from switchboard.common.telemetry import grpc_client_interceptors
from switchboard.orchestrator.tools import ToolContext
from switchboard.orchestrator.turn_state import TurnState
from switchboard.v1.events_pb2 import CompletedTurn, TurnRequest
from switchboard.v1.memory_pb2 import ConversationContext, GetContextRequest
from switchboard.v1.memory_pb2_grpc import MemoryServiceStub

log = logging.getLogger(__name__)

TICKETS_COLLECTION = "tickets"
_TICKET_NAMESPACE = uuid.UUID("5b0c2a4e-8f3d-4c1e-9a57-2d6f0b8e1c33")


class MemoryClient:
    """Loads conversation context; a slow or absent memory service degrades, never blocks."""

    def __init__(self, target: str, timeout_s: float, max_tokens: int) -> None:
        self._channel = grpc.aio.insecure_channel(target, interceptors=grpc_client_interceptors())
        self._stub = MemoryServiceStub(self._channel)
        self._timeout_s = timeout_s
        self._max_tokens = max_tokens

    async def context_for(self, turn: TurnRequest) -> ConversationContext:
        """Summary and recent messages, or an empty degraded context when memory fails."""
        if turn.new_conversation:
            # The gateway opened the conversation with this turn: nothing is stored yet.
            return ConversationContext(complete=True)
        return await self._get(
            GetContextRequest(
                tenant_id=turn.tenant_id,
                conversation_id=turn.conversation_id,
                max_tokens=self._max_tokens,
                request_id=turn.request_id,
            )
        )

    async def context_after(self, turn: CompletedTurn) -> ConversationContext:
        """The context of the turn after `turn`, read ahead of it: `turn` is included even if
        memory has not received it from `chat.turns` yet."""
        return await self._get(
            GetContextRequest(
                tenant_id=turn.tenant_id,
                conversation_id=turn.conversation_id,
                max_tokens=self._max_tokens,
                pending=turn,
            )
        )

    async def _get(self, request: GetContextRequest) -> ConversationContext:
        try:
            context: ConversationContext = await self._stub.GetContext(
                request, timeout=self._timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            log.warning(
                "memory unavailable for %s (%s): answering without history",
                request.conversation_id,
                exc.code().name,
            )
            return ConversationContext(degraded=True)
        return context

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()


# Stores a turn's first state only if it has none (one round trip, atomic).
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'turn', ARGV[1], 'task', ARGV[2], 'meta', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""


class RedisTurnStore:
    """What the orchestrator must remember between a task and its result, with a TTL,
    by tenant and request id."""

    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        self._create = redis.register_script(_CREATE)

    @staticmethod
    def _key(tenant_id: str, request_id: str) -> str:
        return f"sb:{tenant_id}:turn:{request_id}"

    async def create(self, state: TurnState) -> TurnState:
        """Store a turn's first state unless it has one; returns the state that holds."""
        created = await self._create(
            keys=[self._key(state.turn.tenant_id, state.turn.request_id)],
            args=[
                state.turn.SerializeToString(),
                state.task.SerializeToString(),
                state.to_json(),
                self._ttl_s,
            ],
        )
        if created:
            return state
        existing = await self.load(state.turn.tenant_id, state.turn.request_id)
        return existing if existing is not None else state

    async def save(self, state: TurnState) -> None:
        """Remember a turn whose next task is about to be published."""
        key = self._key(state.turn.tenant_id, state.turn.request_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={
                    "turn": state.turn.SerializeToString(),
                    "task": state.task.SerializeToString(),
                    "meta": state.to_json(),
                },
            )
            pipe.expire(key, self._ttl_s)
            await pipe.execute()

    async def load(self, tenant_id: str, request_id: str) -> TurnState | None:
        """The turn's state, or None when it finished already or expired."""
        fields = cast(
            dict[bytes, bytes], await self._redis.hgetall(self._key(tenant_id, request_id))
        )
        return self._state_of(tenant_id, fields)

    @staticmethod
    def _state_of(tenant_id: str, fields: dict[bytes, bytes]) -> TurnState | None:
        if not fields:
            return None
        state = TurnState.from_parts(fields[b"turn"], fields[b"task"], fields[b"meta"].decode())
        # The key holds the tenant; the stored turn must agree before it is reused.
        return state if state.turn.tenant_id == tenant_id else None

    async def lookup(self, tenant_id: str, request_id: str) -> tuple[TurnState | None, bool]:
        """The turn's state and whether it ended, in one round trip (a new turn asks both)."""
        key = self._key(tenant_id, request_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(key)
            pipe.exists(f"{key}:ended")
            fields, ended = await pipe.execute()
        return self._state_of(tenant_id, cast(dict[bytes, bytes], fields)), bool(ended)

    async def forget(self, tenant_id: str, request_id: str) -> None:
        """Drop a finished turn, remembering for the TTL that it ended."""
        key = self._key(tenant_id, request_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.set(f"{key}:ended", b"1", ex=self._ttl_s)
            await pipe.execute()

    async def finished(self, tenant_id: str, request_id: str) -> bool:
        """Whether the turn ended within the TTL."""
        return bool(await self._redis.exists(f"{self._key(tenant_id, request_id)}:ended"))


class RedisResponseCache:
    """Cached answers to FAQ-style first turns, JSON values with a TTL."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def get(self, key: str) -> dict[str, Any] | None:
        raw = await self._redis.get(key)
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        return value if isinstance(value, dict) and "text" in value else None

    async def put(self, key: str, value: dict[str, Any], ttl_s: int) -> None:
        await self._redis.set(key, json.dumps(value), ex=ttl_s)


class MongoTicketStore:
    """Handoff tickets per tenant (MongoDB `tickets`); one ticket per request at most."""

    def __init__(self, client: AsyncMongoClient[dict[str, Any]], database: str) -> None:
        self._collection = client[database][TICKETS_COLLECTION]
        self._redactor = Redactor()

    @staticmethod
    def ticket_id(tenant_id: str, request_id: str) -> str:
        """Deterministic, so that a redelivered request opens no second ticket."""
        return "T-" + uuid.uuid5(_TICKET_NAMESPACE, f"{tenant_id}/{request_id}").hex[:12].upper()

    async def open_ticket(self, context: ToolContext, reason: str, priority: str) -> str:
        """Open (or find) the ticket of this request; returns its id."""
        ticket_id = self.ticket_id(context.tenant_id, context.request_id)
        await self._collection.update_one(
            {"_id": ticket_id},
            {
                "$setOnInsert": {
                    "tenant_id": context.tenant_id,
                    "conversation_id": context.conversation_id,
                    "request_id": context.request_id,
                    "user_id": context.user_id,
                    # A reason is the model's or the customer's words: stored redacted.
                    "reason": self._redactor.redact(reason, ALL_KINDS).text,
                    "priority": priority,
                    "status": "open",
                    "created_at": datetime.now(UTC),
                }
            },
            upsert=True,
        )
        return ticket_id
