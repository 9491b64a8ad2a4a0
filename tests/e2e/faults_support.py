"""The fault-test harness: concurrent conversations through the real gRPC API while a fault
happens, then an account of every request against what the client saw and what MongoDB stored.

`run_traffic` drives N conversations, each sending turns one after the other (a unique request
id and the run's marker in every message), recording every event of every request; the fault
coroutine runs beside it. `account` then classifies each request and checks the store:

- accepted: the gateway sent `started`;
- completed: the stream ended in `done`, and the turn was stored exactly once with the text
  the client was left with (after honouring `reset`);
- clear_errors: the stream ended in an `error` event, or in a gRPC status other than the
  client's own deadline, after acceptance;
- refused: a gRPC status before acceptance (e.g. UNAVAILABLE while Kafka is down), after the
  client's retries with the same request id; fine, as the client was told;
- lost (must be 0): accepted but the stream ended without `done` or `error` (or ran out the
  client's deadline), or `done` but the turn was not stored within a bounded wait;
- duplicated (must be 0): more than one terminal event or a repeated sequence in a stream, or
  a turn stored more than once per request and role;
- mismatched (must be 0): `done`, but the stored reply differs from the text the client was
  left with.
"""

import asyncio
import json
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.partitioner import DefaultPartitioner
from pymongo import AsyncMongoClient

from switchboard.v1.chat_pb2 import ROLE_ASSISTANT, ROLE_USER, ChatEvent, ChatOptions, ChatRequest
from switchboard.v1.chat_pb2_grpc import ChatServiceStub

from .conftest import KAFKA
from .markers import word_marker
from .memory_support import make_turns, publish_turns, stored

TERMINAL = ("done", "error")
TASK_PARTITIONS = 8  # deploy/local/kafka/topics.txt


def kinds(events: list[ChatEvent]) -> list[str]:
    return [str(e.WhichOneof("event")) for e in events]


def final_text(events: list[ChatEvent]) -> str:
    """The reply the client shows: the deltas after the last reset."""
    names = kinds(events)
    start = len(names) - names[::-1].index("reset") if "reset" in names else 0
    return "".join(e.delta.text for e in events[start:] if e.WhichOneof("event") == "delta")


def journal(simulator_url: str) -> list[dict[str, Any]]:
    """The simulator's journal: the last requests it received, oldest first."""
    with urllib.request.urlopen(f"{simulator_url}/_journal", timeout=5) as response:
        entries: list[dict[str, Any]] = json.load(response)["requests"]
        return entries


def calls_for(
    simulator_url: str, request_id: str, entries: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """The simulator's journal entries of one request's first generation (its `x-sim-key`)."""
    key = f"{request_id}:0"
    return [
        e
        for e in (journal(simulator_url) if entries is None else entries)
        if {k.lower(): v for k, v in e["headers"].items()}.get("x-sim-key") == key
    ]


def conversations_on_every_partition(partitions: int = TASK_PARTITIONS) -> dict[int, str]:
    """A new conversation id for each partition of the task topics (keys are ids)."""
    partitioner = DefaultPartitioner()
    found: dict[int, str] = {}
    every = list(range(partitions))
    while len(found) < partitions:
        conversation_id = str(uuid.uuid4())
        found.setdefault(partitioner(conversation_id.encode(), every, every), conversation_id)
    return found


async def seed_conversations(
    turns_topic: str, mongo: "Mongo", database: str, tenant_id: str, conversation_ids: list[str]
) -> None:
    """Give the platform conversations with these ids (one past turn each, stored by memory as
    the orchestrator's `chat.turns` would have it), so that a client may continue them: the
    gateway starts new conversations under ids of its own and answers NOT_FOUND for others."""
    turns = [
        turn
        for conversation_id in conversation_ids
        for turn in make_turns(
            tenant_id, conversation_id, [("Hello, order 1.", "Hi!")], user_id="fault-tests"
        )
    ]
    await publish_turns(turns_topic, turns)
    for conversation_id in conversation_ids:
        docs = await stored(mongo, database, tenant_id, conversation_id, 2)
        assert len(docs) >= 2, f"seeded conversation {conversation_id} not stored"


async def partitions_of(group: str, client_marker: str) -> set[int]:
    """The partitions that the members whose client id contains `client_marker` hold."""
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA, request_timeout_ms=10_000)
    await admin.start()
    try:
        held: set[int] = set()
        for response in await admin.describe_consumer_groups([group]):
            for description in response.groups:
                for member in description[5]:
                    member_id, client_id = member[0], member[1]
                    if client_marker in client_id or client_marker in member_id:
                        assignment = ConsumerProtocolMemberAssignment.decode(member[-1])
                        held.update(tp.partition for tp in assignment.partitions())
        return held
    finally:
        await admin.close()


@dataclass
class TurnRecord:
    """One request as the client saw it."""

    conversation: int
    turn: int
    request: ChatRequest
    events: list[ChatEvent] = field(default_factory=list)
    # The call's final gRPC status (OK when the stream ended normally) and its details.
    status: grpc.StatusCode = grpc.StatusCode.OK
    details: str = ""
    # Refusals before acceptance (each retried with the same request id).
    refusals: list[str] = field(default_factory=list)
    # time.monotonic() when the last attempt was sent and when its call ended.
    sent_at: float = 0.0
    ended_at: float | None = None

    @property
    def accepted(self) -> bool:
        return bool(self.events) and self.events[0].WhichOneof("event") == "started"

    @property
    def completed(self) -> bool:
        return self.accepted and self.last_kind == "done"

    @property
    def last_kind(self) -> str | None:
        return kinds(self.events)[-1] if self.events else None


OptionsFor = Callable[[int, int], ChatOptions]


@dataclass
class Traffic:
    """Conversations and their turns, live: the fault coroutine may watch `records`."""

    target: str
    api_key: str
    marker: str = field(default_factory=word_marker)
    conversations: int = 6
    # Each conversation sends at least `min_turns`, and goes on (up to `max_turns`) until the
    # fault is over, so that traffic runs before, during and after it.
    min_turns: int = 4
    max_turns: int = 8
    options_for: OptionsFor = lambda _c, _t: ChatOptions(tier="cheap")
    # Existing conversations to continue (see `seed_conversations`); by default each
    # conversation is new: its first turn sends no id, the next ones the id from `started`.
    conversation_ids: list[str] | None = None
    deadline_s: float = 90.0
    # No conversation starts a new turn after this long, so that a broken platform costs a
    # bounded time (each stream is bounded by `deadline_s`).
    budget_s: float = 120.0
    # A refused request is retried with the same request id, as a client would.
    refusal_retries: int = 3
    refusal_backoff_s: float = 1.0
    # A pause between a reply and the next message of the conversation (a user's think time).
    think_s: float = 0.0
    user_id: str = "fault-tests"
    records: list[TurnRecord] = field(default_factory=list)
    fault_over: asyncio.Event = field(default_factory=asyncio.Event)

    def message(self, conversation: int, turn: int) -> str:
        # A digit in every message (the demo tenant caches digit-free first messages), and
        # nothing that asks for a human or says something failed (handoff rules), or for a
        # tool (the simulator would look an order up: two provider calls per turn).
        return (
            f"[{self.marker}] Parcel {conversation}{turn:02d}: "
            f"please confirm the delivery slot for parcel {conversation}-{turn}."
        )

    def in_flight(self) -> list[TurnRecord]:
        """Accepted requests whose stream has not ended yet."""
        return [
            r
            for r in self.records
            if r.accepted and r.last_kind not in TERMINAL and r.status == grpc.StatusCode.OK
        ]

    async def until(self, condition: Callable[["Traffic"], bool], timeout_s: float = 30.0) -> None:
        """Wait (bounded) until `condition(self)` holds; fails the test otherwise."""
        deadline = time.monotonic() + timeout_s
        while not condition(self):
            if time.monotonic() > deadline:
                seen = Counter(r.last_kind for r in self.records)
                raise AssertionError(f"traffic never reached the fault's condition: {seen}")
            await asyncio.sleep(0.02)

    async def run(self, fault: Callable[["Traffic"], Awaitable[None]]) -> None:
        """Send the traffic and run `fault(self)` beside it; both must end."""
        async with grpc.aio.insecure_channel(self.target) as channel:
            stub = ChatServiceStub(channel)

            async def fault_then_flag() -> None:
                try:
                    await fault(self)
                finally:
                    self.fault_over.set()

            conversations = [
                asyncio.create_task(self._conversation(stub, c)) for c in range(self.conversations)
            ]
            fault_task = asyncio.create_task(fault_then_flag())
            try:
                await asyncio.gather(fault_task, *conversations)
            finally:
                for task in (fault_task, *conversations):
                    task.cancel()

    async def _conversation(self, stub: ChatServiceStub, number: int) -> None:
        conversation_id = self.conversation_ids[number] if self.conversation_ids else ""
        turn = 0
        stop_at = time.monotonic() + self.budget_s
        while (
            turn < self.max_turns
            and (turn < self.min_turns or not self.fault_over.is_set())
            and time.monotonic() < stop_at
        ):
            request = ChatRequest(
                conversation_id=conversation_id,
                message=self.message(number, turn),
                user_id=self.user_id,
                request_id=f"fault-{self.marker}-{number}-{turn}-{uuid.uuid4().hex[:6]}",
                options=self.options_for(number, turn),
            )
            record = TurnRecord(number, turn, request)
            self.records.append(record)
            await self._send(stub, record)
            if not conversation_id and record.accepted:
                conversation_id = record.events[0].started.conversation_id
            turn += 1
            if self.think_s:
                await asyncio.sleep(self.think_s)

    async def _send(self, stub: ChatServiceStub, record: TurnRecord) -> None:
        auth = [("authorization", f"Bearer {self.api_key}")]
        for attempt in range(self.refusal_retries + 1):
            record.events.clear()
            record.sent_at, record.ended_at = time.monotonic(), None
            call = stub.Chat(record.request, metadata=auth, timeout=self.deadline_s)
            try:
                async for event in call:
                    record.events.append(event)
                record.status, record.details = grpc.StatusCode.OK, ""
            except grpc.aio.AioRpcError as exc:
                record.status, record.details = exc.code(), exc.details() or ""
            record.ended_at = time.monotonic()
            if record.accepted or record.status == grpc.StatusCode.OK:
                return
            record.refusals.append(f"{record.status.name}: {record.details}")
            if attempt < self.refusal_retries:
                await asyncio.sleep(self.refusal_backoff_s)


@dataclass
class FaultReport:
    """The account of one fault test's traffic (see the module's docstring)."""

    fault: str
    requests: int = 0
    accepted: int = 0
    completed: int = 0
    clear_errors: int = 0
    refused: int = 0
    lost: int = 0
    duplicated: int = 0
    mismatched: int = 0
    # Informative: streams that saw a `reset`, refusals that a retry got past, error codes,
    # and requests that ended in an error or a refusal but whose turn was stored anyway.
    resets: int = 0
    retried_refusals: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    stored_after_error: int = 0
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        errors = ",".join(f"{code}:{n}" for code, n in sorted(self.errors.items())) or "-"
        return (
            f"requests={self.requests} accepted={self.accepted} completed={self.completed} "
            f"clear_errors={self.clear_errors} lost={self.lost} duplicated={self.duplicated} "
            f"mismatched={self.mismatched} "
            f"refused={self.refused} resets={self.resets} "
            f"retried_refusals={self.retried_refusals} errors={errors} "
            f"stored_after_error={self.stored_after_error}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "fault": self.fault,
            "requests": self.requests,
            "accepted": self.accepted,
            "completed": self.completed,
            "clear_errors": self.clear_errors,
            "refused": self.refused,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "mismatched": self.mismatched,
            "resets": self.resets,
            "errors": dict(self.errors),
        }


Mongo = AsyncMongoClient[Any]


async def _stored(
    mongo: Mongo, database: str, tenant_id: str, request_ids: list[str]
) -> dict[str, list[dict[str, Any]]]:
    docs = (
        await mongo[database]["messages"]
        .find({"tenant_id": tenant_id, "request_id": {"$in": request_ids}})
        .to_list()
    )
    by_request: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_request.setdefault(str(doc["request_id"]), []).append(doc)
    return by_request


async def account(
    fault: str,
    traffic: Traffic,
    mongo: Mongo,
    database: str,
    *,
    tenant_id: str = "demo",
    store_wait_s: float = 30.0,
) -> FaultReport:
    """Classify every request of `traffic` and check MongoDB's `messages` (bounded wait for
    the completed turns to be stored)."""
    records = traffic.records
    report = FaultReport(fault, requests=len(records))
    # By request id: a new conversation's first request carries no conversation id.
    request_ids = sorted({r.request.request_id for r in records})
    completed = [r for r in records if r.accepted and r.last_kind == "done"]
    deadline = time.monotonic() + store_wait_s
    while True:
        stored = await _stored(mongo, database, tenant_id, request_ids)
        if all(len(stored.get(r.request.request_id, [])) >= 2 for r in completed):
            break
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)

    for record in records:
        request_id = record.request.request_id
        docs = stored.get(request_id, [])
        roles = Counter(d["role"] for d in docs)
        names = kinds(record.events)
        report.retried_refusals += len(record.refusals) if record.accepted else 0
        if any(n > 1 for n in roles.values()):
            report.duplicated += 1
            report.problems.append(f"{request_id}: stored {dict(roles)}")
            continue
        if not record.accepted:
            report.refused += 1
            if docs:
                report.stored_after_error += 1
            if record.status == grpc.StatusCode.OK:
                report.problems.append(f"{request_id}: ended without started or a status")
            continue
        report.accepted += 1
        report.resets += "reset" in names
        terminals = [n for n in names if n in TERMINAL]
        sequences = [e.sequence for e in record.events[1:]]
        if len(terminals) > 1 or sequences != sorted(set(sequences)):
            report.duplicated += 1
            report.problems.append(f"{request_id}: events {names} sequences {sequences}")
            continue
        if names[-1] == "done":
            text = final_text(record.events)
            assistant = [d["text"] for d in docs if d["role"] == ROLE_ASSISTANT]
            if roles[ROLE_USER] != 1 or roles[ROLE_ASSISTANT] != 1:
                report.lost += 1
                report.problems.append(f"{request_id}: done but stored {dict(roles)}")
            elif assistant != [text]:
                report.mismatched += 1
                report.problems.append(
                    f"{request_id}: client text {text!r} but stored {assistant!r}"
                )
            else:
                report.completed += 1
        elif names[-1] == "error":
            report.clear_errors += 1
            report.errors[record.events[-1].error.code] += 1
            report.stored_after_error += bool(docs)
        elif record.status not in (grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED):
            report.clear_errors += 1
            report.errors[f"status {record.status.name}"] += 1
            report.stored_after_error += bool(docs)
        else:
            report.lost += 1
            report.problems.append(
                f"{request_id}: stream ended after {names} ({record.status.name})"
            )
    return report


def publish_report(report: FaultReport, record_property: Callable[[str, object], None]) -> None:
    """Print the report line (seen with `pytest -s` and in CI logs) and attach it to the test."""
    print(f"\nFAULT {report.fault}: {report.line()}")
    for problem in report.problems:
        print(f"  {problem}")
    record_property("fault_report", json.dumps(report.as_dict()))
