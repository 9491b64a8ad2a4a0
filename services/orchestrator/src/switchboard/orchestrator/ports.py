"""What the turn engine touches, as small protocols: Kafka, Redis, MongoDB, memory and the
tools come in through these, so the engine is tested with fakes (adapters.py has the real
ones)."""

from collections.abc import Callable
from typing import Any, Protocol

from switchboard.common.tenants import TenantConfig
from switchboard.orchestrator.tools import ToolContext, ToolRegistry
from switchboard.orchestrator.turn_state import TurnState
from switchboard.v1.chat_pb2 import ChatEvent
from switchboard.v1.events_pb2 import CompletedTurn, LlmTask, TurnRequest
from switchboard.v1.memory_pb2 import ConversationContext


class Outbox(Protocol):
    """Where the engine's messages go (Kafka in production)."""

    async def reply(self, turn: TurnRequest, event: ChatEvent) -> None:
        """Send `event` to the turn's client (its gateway's reply topic, tagged with the
        turn's tenant so that it reaches no other tenant's stream)."""
        ...

    async def task(self, task: LlmTask) -> None: ...

    async def completed(self, turn: CompletedTurn) -> None: ...


class ContextSource(Protocol):
    async def context_for(self, turn: TurnRequest) -> ConversationContext: ...


class TenantSource(Protocol):
    async def get(self, tenant_id: str) -> TenantConfig | None: ...


class SpendLedger(Protocol):
    async def add(
        self, tenant_id: str, cost_usd: float, *, charge_id: str | None = None
    ) -> float: ...


class Tickets(Protocol):
    async def open_ticket(self, context: ToolContext, reason: str, priority: str) -> str: ...


class ResponseCache(Protocol):
    async def get(self, key: str) -> dict[str, Any] | None: ...

    async def put(self, key: str, value: dict[str, Any], ttl_s: int) -> None: ...


class StateStore(Protocol):
    """Turn states by (tenant, request id): request ids are chosen by clients, so one
    tenant's id must never reach another tenant's turn."""

    async def save(self, state: TurnState) -> None: ...

    async def create(self, state: TurnState) -> TurnState:
        """Store `state` unless the turn has one already; returns the one that holds."""
        ...

    async def load(self, tenant_id: str, request_id: str) -> TurnState | None: ...

    async def forget(self, tenant_id: str, request_id: str) -> None:
        """Drop a finished turn's state, remembering (for the state's TTL) that it ended."""
        ...

    async def finished(self, tenant_id: str, request_id: str) -> bool:
        """Whether the turn ended already (a late copy of its request must not run it)."""
        ...


RegistryFactory = Callable[[TenantConfig], ToolRegistry]
