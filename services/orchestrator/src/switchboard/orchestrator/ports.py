"""What the turn engine touches, as small protocols: Kafka, Redis, MongoDB, memory and the
tools come in through these, so the engine is tested with fakes (adapters.py has the real
ones)."""

import logging
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import ValidationError

from switchboard.common.consumer import UnprocessableError
from switchboard.common.tenants import TenantConfig
from switchboard.orchestrator.tools import ToolContext, ToolRegistry
from switchboard.orchestrator.turn_state import TurnState
from switchboard.v1.chat_pb2 import ChatEvent
from switchboard.v1.events_pb2 import CompletedTurn, LlmTask, TurnRequest
from switchboard.v1.memory_pb2 import ConversationContext

log = logging.getLogger(__name__)


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

    async def context_after(self, turn: CompletedTurn) -> ConversationContext: ...


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

    async def lookup(self, tenant_id: str, request_id: str) -> tuple[TurnState | None, bool]:
        """`load` and `finished` at once (one round trip): the turn's state, and whether it
        ended already."""
        ...

    async def forget(self, tenant_id: str, request_id: str) -> None:
        """Drop a finished turn's state, remembering (for the state's TTL) that it ended."""
        ...

    async def finished(self, tenant_id: str, request_id: str) -> bool:
        """Whether the turn ended already (a late copy of its request must not run it)."""
        ...


RegistryFactory = Callable[[TenantConfig], ToolRegistry]


async def tenant_config(tenants: TenantSource, tenant_id: str) -> TenantConfig:
    """The tenant's configuration: the defaults when it has none yet, `UnprocessableError`
    when it is invalid (retrying cannot help until it is fixed)."""
    try:
        tenant = await tenants.get(tenant_id)
    except ValidationError as exc:
        raise UnprocessableError(
            f"the configuration of tenant {tenant_id} is invalid: "
            + "; ".join(
                f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
        ) from exc
    if tenant is None:
        # The gateway authenticated the key, so the tenant exists; it may just not be
        # configured here yet. Default policies are safe ones.
        log.warning("tenant %s has no configuration; using the defaults", tenant_id)
        return TenantConfig(tenant_id=tenant_id, name=tenant_id)
    return tenant
