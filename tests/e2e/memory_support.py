"""Helpers for the memory tests: publish completed turns, wait for the store, bounded."""

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from google.protobuf.timestamp_pb2 import Timestamp
from pymongo import AsyncMongoClient

from switchboard.common.envelope import headers_for
from switchboard.v1.events_pb2 import CompletedTurn

from .conftest import KAFKA, LOGS

T = TypeVar("T")
Mongo = AsyncMongoClient[dict[str, Any]]


def timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def make_turns(
    tenant_id: str,
    conversation_id: str,
    texts: list[tuple[str, str]],
    *,
    start: datetime | None = None,
    user_id: str = "tester",
) -> list[CompletedTurn]:
    """Completed turns one second apart (by default ending now), oldest first."""
    start = start or datetime.now(UTC) - timedelta(seconds=len(texts) + 1)
    turns = []
    for n, (user, assistant) in enumerate(texts):
        accepted = start + timedelta(seconds=n)
        turns.append(
            CompletedTurn(
                tenant_id=tenant_id,
                conversation_id=conversation_id,
                request_id=f"req-{uuid.uuid4().hex[:10]}",
                user_id=user_id,
                user_message=user,
                assistant_message=assistant,
                model="gpt-4o-mini",
                tier="cheap",
                accepted_at=timestamp(accepted),
                completed_at=timestamp(accepted + timedelta(milliseconds=500)),
            )
        )
    return turns


async def publish_turns(topic: str, turns: list[CompletedTurn]) -> None:
    """Publish turns to `chat.turns` as the orchestrator does (keyed by conversation)."""
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA, acks="all")
    await producer.start()
    try:
        for turn in turns:
            await producer.send_and_wait(
                topic,
                turn.SerializeToString(),
                key=turn.conversation_id.encode(),
                headers=[(k, v.encode()) for k, v in headers_for(turn).items()],
            )
    finally:
        await producer.stop()


async def eventually(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    timeout_s: float = 20.0,
    interval_s: float = 0.1,
) -> T:
    """Poll `probe` until `done(value)`, at most `timeout_s`; returns the last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if done(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(interval_s)


async def stored(
    mongo: Mongo, database: str, tenant_id: str, conversation_id: str, count: int
) -> list[dict[str, Any]]:
    """The conversation's message documents by position, once there are `count` and the
    conversation document counts them too (memory writes it after the messages; bounded)."""
    scope = {"tenant_id": tenant_id, "conversation_id": conversation_id}

    async def probe() -> tuple[list[dict[str, Any]], int]:
        docs = await mongo[database]["messages"].find(scope).sort("position").to_list()
        conversation = await mongo[database]["conversations"].find_one(scope)
        return docs, (conversation or {}).get("message_count", 0)

    docs, _ = await eventually(probe, lambda seen: len(seen[0]) >= count and seen[1] >= count)
    return docs


def log_lines(*needles: str, services: tuple[str, ...] = ("memory", "llm-worker")) -> str:
    """The e2e log lines of `services` that mention any of `needles`: a failure's evidence."""
    found = []
    for service in services:
        path = LOGS / f"{service}.log"
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            if any(needle in line for needle in needles):
                found.append(f"[{service}] {line[:300]}")
    return "\n".join(found[-60:]) or "(no log lines)"
