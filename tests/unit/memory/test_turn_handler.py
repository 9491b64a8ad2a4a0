"""The `chat.turns` record handler's use of its lease (issue 14, finding 3)."""

from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from switchboard.common.consumer import PartitionLostError
from switchboard.common.envelope import headers_for
from switchboard.memory.app import TurnRecordHandler
from switchboard.memory.cache import ContextCache
from switchboard.memory.settings import MemorySettings
from switchboard.memory.store import SavedTurn, SaveOutcome
from switchboard.v1.events_pb2 import CompletedTurn


class Store:
    def __init__(self) -> None:
        self.saved: list[str] = []

    async def save_turn_with_state(self, turn: CompletedTurn) -> SavedTurn:
        self.saved.append(turn.request_id)
        return SavedTurn(SaveOutcome.STORED)


class Summarizer:
    def __init__(self) -> None:
        self.planned: list[str] = []

    async def after_turn(self, tenant_id: str, conversation_id: str, saved: Any) -> None:
        self.planned.append(conversation_id)


class TurnRecord:
    def __init__(self, turn: CompletedTurn) -> None:
        self.topic, self.partition, self.offset, self.key = "chat.turns", 0, 7, b"c1"
        self.value: bytes | None = turn.SerializeToString()
        self.headers = [(k, v.encode()) for k, v in headers_for(turn).items()]


class Lease:
    def __init__(self, held: bool) -> None:
        self._held = held

    async def held(self) -> bool:
        return self._held


def handler(store: Store, summarizer: Summarizer) -> TurnRecordHandler:
    return TurnRecordHandler(
        MemorySettings(),
        broker=None,  # type: ignore[arg-type] # only poison records reach it
        store=store,  # type: ignore[arg-type]
        cache=ContextCache(10, 10, 60),
        summarizer=summarizer,  # type: ignore[arg-type]
    )


def record() -> TurnRecord:
    stamp = Timestamp(seconds=1_700_000_000)
    return TurnRecord(
        CompletedTurn(
            tenant_id="demo",
            conversation_id="c1",
            request_id="r1",
            user_message="hi",
            assistant_message="hello",
            accepted_at=stamp,
            completed_at=stamp,
        )
    )


async def test_a_turn_whose_partition_moved_plans_no_summary() -> None:
    """Two owners of one record during a rebalance: the idempotent write may happen twice,
    the summary plan only at the owner that holds the lease."""
    store, summarizer = Store(), Summarizer()
    with pytest.raises(PartitionLostError):
        await handler(store, summarizer)(record(), Lease(held=False))  # type: ignore[arg-type]
    assert store.saved == ["r1"] and summarizer.planned == []

    await handler(store, summarizer)(record(), Lease(held=True))  # type: ignore[arg-type]
    assert summarizer.planned == ["c1"]
