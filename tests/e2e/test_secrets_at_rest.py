"""No secret at rest: sensitive chats through the real platform, then a byte search of the
Kafka log segments, the FerretDB (SQLite) data files, Redis records and service logs.

The test owns its stores: a private Kafka broker and a private FerretDB, each in a temporary
directory (tests/e2e/private_stack.py), so the files searched hold this test's data alone.
A marker word sent with every message must be found in those files: it proves the search
reads the data that was written (otherwise a compressed or unwritten log would pass).
"""

import asyncio
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from switchboard.v1.chat_pb2 import (
    RATING_DOWN,
    ChatEvent,
    ChatOptions,
    ChatRequest,
    SubmitFeedbackRequest,
)
from switchboard.v1.chat_pb2_grpc import ChatServiceStub

from .conftest import LOGS, MONGO, REDIS, Platform
from .private_stack import (
    PrivateFerretDB,
    PrivateKafka,
    PrivatePlatform,
    private_platform,
    temp_dir,
)

pytestmark = pytest.mark.e2e
STORE_WAIT_S = 30.0
MARKER = f"zebra{uuid.uuid4().hex[:8]}"

# Each message carries secrets of one or more classes; SECRETS are the byte strings that
# must appear nowhere at rest (raw and compact forms).
MESSAGES = [
    f"{MARKER} My card is 4111 1111 1111 1111, cvv 737, exp 09/27. Why was I charged twice?",
    f"{MARKER} Please refund to IBAN DE89 3704 0044 0532 0130 00, order 55120.",
    f"{MARKER} my SSN is 536-22-8726 and my numéro de sécu 2 84 05 75 120 004 32",
    f"{MARKER} my password is Tr0ub4dorXq&3 and my PIN is 4821, can you reset the account?",
    f"{MARKER} our db is postgres://admin:S3cr3tPass9@db.example.com/app and the key is "
    "sk-proj-4f9Ks8dL2mQ7xZ1vB6nR3tY8uW0pE5aH",
    f"{MARKER} card 5454.5454.5454.5454 and Steuer-ID 36 574 261 809, my BSN is 111222333",
    f"{MARKER} email me at jane.doe.zz@example.com or john dot roe at gmail dot com",
    f"{MARKER} I want to speak to a human, my card 5500 0000 0000 0004 was charged twice",
]
METADATA = {"note": f"{MARKER} card on file 4000 0566 5566 5556"}
FEEDBACK = f"{MARKER} the bot asked for my password, it is Hunter2Zq9!"
SECRETS = [
    "4111 1111 1111 1111",
    "4111111111111111",
    "cvv 737",
    "09/27",
    "DE89 3704 0044 0532 0130 00",
    "DE89370400440532013000",
    "536-22-8726",
    "2 84 05 75 120 004 32",
    "Tr0ub4dorXq&3",
    "PIN is 4821",
    "S3cr3tPass9",
    "sk-proj-4f9Ks8dL2mQ7xZ1vB6nR3tY8uW0pE5aH",
    "5454.5454.5454.5454",
    "36 574 261 809",
    "111222333",
    "jane.doe.zz@example.com",
    "john dot roe at gmail dot com",
    "5500 0000 0000 0004",
    "4000 0566 5566 5556",
    "Hunter2Zq9!",
]


@dataclass
class Stack:
    kafka: PrivateKafka
    kafka_home: Path
    ferretdb: PrivateFerretDB
    ferretdb_home: Path
    platform: PrivatePlatform


@pytest.fixture(scope="module")
def stack(platform: Platform) -> Iterator[Stack]:
    LOGS.mkdir(parents=True, exist_ok=True)
    with temp_dir("sb-at-rest-kafka-") as kafka_home, temp_dir("sb-at-rest-ferret-") as ferret:
        kafka = PrivateKafka(kafka_home, LOGS / "at-rest-kafka.log")
        ferretdb = PrivateFerretDB(ferret, LOGS / "at-rest-ferretdb.log")
        try:
            asyncio.run(kafka.start())
            ferretdb.start()
            with private_platform(
                platform, "at-rest", kafka=kafka.bootstrap, mongo_url=ferretdb.url
            ) as plat:
                yield Stack(kafka, kafka_home, ferretdb, ferret, plat)
        finally:
            ferretdb.stop()
            asyncio.run(kafka.stop())


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def _hits(paths: list[Path], needles: list[str]) -> dict[str, list[str]]:
    """Which needles occur (as UTF-8 bytes) in which files."""
    found: dict[str, list[str]] = {}
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError:
            continue  # a file removed while we walk (a deleted segment)
        for needle in needles:
            if needle.encode() in data:
                found.setdefault(needle, []).append(str(path))
    return found


async def _chat(stub: ChatServiceStub, stack: Stack, request: ChatRequest) -> list[ChatEvent]:
    auth = [("authorization", f"Bearer {stack.platform.api_key}")]
    return [e async for e in stub.Chat(request, metadata=auth, timeout=60)]


async def _wait_stored(stack: Stack, conversations: list[str]) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        stack.ferretdb.url, serverSelectionTimeoutMS=5_000
    )
    try:
        messages = client[stack.platform.database]["messages"]
        deadline = time.monotonic() + STORE_WAIT_S
        while True:
            count = await messages.count_documents({"conversation_id": {"$in": conversations}})
            if count >= 2 * len(conversations) or time.monotonic() > deadline:
                assert count >= 2 * len(conversations), f"only {count} messages stored"
                return
            await asyncio.sleep(0.2)
    finally:
        await client.close()


async def _redis_values(request_ids: list[str]) -> list[bytes]:
    """Everything Redis holds for these requests: idempotency records, recorded events,
    turn state (whatever is still within its TTL)."""
    redis = Redis.from_url(REDIS)
    values: list[bytes] = []
    try:
        for request_id in request_ids:
            async for key in redis.scan_iter(match=f"*{request_id}*", count=1000):
                kind = (await redis.type(key)).decode()
                if kind == "string":
                    values.append(await redis.get(key) or b"")
                elif kind == "stream":
                    for _, fields in await redis.xrange(key):
                        values.extend(v for v in fields.values())
                elif kind == "hash":
                    values.extend((await redis.hgetall(key)).values())
    finally:
        await redis.aclose()
    return values


async def test_sensitive_chats_leave_no_secret_in_kafka_ferretdb_redis_or_logs(
    stack: Stack, platform: Platform
) -> None:
    conversations: list[str] = []
    request_ids: list[str] = []
    finishes: list[str] = []
    async with grpc.aio.insecure_channel(stack.platform.gateway_target) as channel:
        stub = ChatServiceStub(channel)
        for n, message in enumerate(MESSAGES):
            request_id = str(uuid.uuid4())
            request = ChatRequest(
                request_id=request_id,
                user_id=f"at-rest-user-{n}",
                message=message,
                options=ChatOptions(tier="cheap", metadata=METADATA if n == 0 else {}),
            )
            events = await _chat(stub, stack, request)
            assert events[-1].WhichOneof("event") == "done", events[-1]
            conversations.append(events[0].started.conversation_id)
            request_ids.append(request_id)
            finishes.append(events[-1].done.finish_reason)
            # A retry of the same request replays it from Redis (the recorded reply).
            replay = await _chat(stub, stack, request)
            assert replay[-1].WhichOneof("event") == "done"
        await _wait_stored(stack, conversations)
        auth = [("authorization", f"Bearer {stack.platform.api_key}")]
        await stub.SubmitFeedback(
            SubmitFeedbackRequest(request_id=request_ids[0], rating=RATING_DOWN, comment=FEEDBACK),
            metadata=auth,
            timeout=30,
        )
    assert "handoff" in finishes, finishes  # the last message went to a human: a ticket

    # Kafka: every topic's log segments (chat.requests, llm.tasks, chat.turns, replies...).
    kafka_files = _files(stack.kafka_home)
    assert _hits(kafka_files, [MARKER]), "the marker is in no Kafka file: the search is blind"
    assert _hits(kafka_files, SECRETS) == {}

    # FerretDB: the SQLite files (and their write-ahead logs) of memory's database.
    ferret_files = _files(stack.ferretdb_home)
    assert _hits(ferret_files, [MARKER]), "the marker is in no FerretDB file: the search is blind"
    assert _hits(ferret_files, SECRETS) == {}

    # Redis: idempotency records and recorded replies of these requests, turn state.
    values = await _redis_values(request_ids)
    assert values, "Redis holds nothing for these requests: the search is blind"
    assert [s for s in SECRETS if any(s.encode() in v for v in values)] == []

    # Tickets (the orchestrator's, on the shared FerretDB): reasons are redacted.
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        MONGO, serverSelectionTimeoutMS=5_000
    )
    try:
        tickets = await (
            client[platform.database]["tickets"]
            .find({"request_id": {"$in": request_ids}})
            .to_list()
        )
    finally:
        await client.close()
    assert tickets, "the handoff opened no ticket"
    assert [s for s in SECRETS if any(s in str(t) for t in tickets)] == []

    # The services' own logs.
    logs = [p for p in LOGS.glob("at-rest-*.log") if not re.search(r"kafka|ferretdb", p.name)]
    assert logs
    assert _hits(logs, SECRETS) == {}
