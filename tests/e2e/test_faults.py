"""Fault tests: real processes, real traffic through the gRPC API while something breaks.

Each test runs concurrent conversations (tests/e2e/faults_support.py) while its fault happens,
then accounts for every request against the client's events and MongoDB, prints a line
`FAULT <name>: requests=.. accepted=.. completed=.. clear_errors=.. lost=.. duplicated=..`
(seen with `pytest -s` and in CI logs, also attached as the `fault_report` property), and
asserts that nothing accepted was lost or duplicated.

- a worker killed with SIGKILL mid-stream (main platform and a second worker);
- bursts of 429 and 500 from the provider (main platform, the simulator's per-request faults);
- a Kafka broker restart, and FerretDB stopped for 20 seconds (a private broker, a private
  FerretDB, and a private platform on each: the shared ones serve every other test).
"""

import asyncio
import itertools
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from switchboard.v1.chat_pb2 import ChatOptions

from .conftest import LOGS, MONGO, ExtraWorker, Platform
from .faults_support import (
    TASK_PARTITIONS,
    FaultReport,
    Traffic,
    TurnRecord,
    account,
    calls_for,
    conversations_on_every_partition,
    journal,
    kinds,
    partitions_of,
    publish_report,
    seed_conversations,
)
from .private_stack import (
    SHORT_MONGO_BOUNDS,
    PrivateFerretDB,
    PrivateKafka,
    PrivatePlatform,
    private_platform,
    temp_dir,
)

pytestmark = pytest.mark.e2e

RecordProperty = Callable[[str, object], None]
KAFKA_DOWN_S = float(os.environ.get("SWITCHBOARD_E2E_KAFKA_DOWN_S", "4"))
FERRETDB_DOWN_S = float(os.environ.get("SWITCHBOARD_E2E_FERRETDB_DOWN_S", "20"))


def cheap(**controls: str) -> ChatOptions:
    """Pinned to the cheap tier (no routing, no cascade), with simulator controls."""
    return ChatOptions(tier="cheap", metadata={f"sim.{k}": v for k, v in controls.items()})


def assert_nothing_lost_or_duplicated(report: FaultReport) -> None:
    assert report.lost == 0, report.problems
    assert report.duplicated == 0, report.problems
    assert report.mismatched == 0, report.problems
    assert report.accepted == report.completed + report.clear_errors, report.line()


async def test_a_worker_killed_mid_stream_loses_nothing_and_duplicates_nothing(
    platform: Platform,
    mongo: AsyncMongoClient[dict[str, object]],
    second_worker: ExtraWorker,
    record_property: RecordProperty,
) -> None:
    group = f"e2e-{platform.run_id}-llm-worker-cheap"
    doomed = await partitions_of(group, "second")
    assert doomed and len(doomed) < TASK_PARTITIONS, "both workers hold partitions"
    # One conversation per partition, so the killed worker holds some of them.
    by_partition = conversations_on_every_partition()
    partitions = sorted(by_partition)
    await seed_conversations(
        platform.topic("chat.turns"),
        mongo,
        platform.database,
        "demo",
        [by_partition[p] for p in partitions],
    )
    traffic = Traffic(
        platform.gateway_target,
        platform.api_key,
        conversations=len(partitions),
        conversation_ids=[by_partition[p] for p in partitions],
        min_turns=3,
        max_turns=3,
        # The first turn streams for about 5 s, so that the kill finds it mid-stream.
        options_for=lambda _c, turn: cheap(delay_ms="60", tokens="80") if turn == 0 else cheap(),
    )

    async def kill_the_second_worker(traffic: Traffic) -> None:
        await traffic.until(
            lambda t: (
                len(t.records) == len(partitions)
                and all("delta" in kinds(r.events) for r in t.records)
            )
        )
        os.kill(second_worker.process.pid, signal.SIGKILL)
        await asyncio.to_thread(second_worker.process.wait, 10)

    await traffic.run(kill_the_second_worker)
    report = await account("worker-sigkill", traffic, mongo, platform.database)
    publish_report(report, record_property)

    assert_nothing_lost_or_duplicated(report)
    assert report.completed == report.requests == 3 * len(partitions)
    entries = journal(platform.simulator_url)
    for record in traffic.records:
        if record.turn != 0:
            continue
        partition = partitions[record.conversation]
        names = kinds(record.events)
        calls = calls_for(platform.simulator_url, record.request.request_id, entries)
        if partition in doomed:
            # The killed worker's streams restart once, after a reset, on the survivor.
            assert names.count("reset") == 1, f"partition {partition}: {names}"
            assert len(calls) == 2, f"partition {partition}: {len(calls)} provider calls"
        else:
            assert "reset" not in names, f"the surviving worker's stream {partition} went on"
            assert len(calls) == 1, f"partition {partition}: {len(calls)} provider calls"


# How each turn of the provider-fault burst is answered: its controls, tier, and the
# provider calls the simulator's journal must show for it, (api, outcome) in order.
Plan = tuple[ChatOptions, list[tuple[str, str]]]
RATE_LIMITED_TWICE: Plan = (
    cheap(fault="429", fault_attempts="2", retry_after_ms="300"),
    [("openai", "error 429"), ("openai", "error 429"), ("openai", "completed")],
)
SERVER_ERROR_TWICE: Plan = (
    cheap(fault="500", fault_attempts="2"),
    [("openai", "error 500"), ("openai", "error 500"), ("openai", "completed")],
)
# The frontier tier's first model fails all three tries; its second model answers.
FALLBACK: Plan = (
    ChatOptions(tier="frontier", metadata={"sim.fault": "500", "sim.fault_attempts": "3"}),
    [("anthropic", "error 500")] * 3 + [("openai", "completed")],
)
HEALTHY: Plan = (cheap(fault="none"), [("openai", "completed")])
# The cheap tier has one model: when every try fails, the client gets a clear error.
ALWAYS_500: Plan = (cheap(fault="500"), [("openai", "error 500")] * 3)
ALWAYS_429: Plan = (
    cheap(fault="429", retry_after_ms="100"),
    [("openai", "error 429")] * 3,
)


def burst_plan(conversation: int, turn: int) -> Plan:
    # Only the last turn of two conversations fails for good: one failure per conversation
    # stays clear of the handoff rules.
    if turn == 3 and conversation in (0, 1):
        return ALWAYS_500 if conversation == 0 else ALWAYS_429
    plans = [RATE_LIMITED_TWICE, SERVER_ERROR_TWICE, FALLBACK, HEALTHY]
    return plans[(conversation + turn) % len(plans)]


async def test_bursts_of_429_and_500_from_the_provider_end_in_done_or_a_clear_error(
    platform: Platform,
    mongo: AsyncMongoClient[dict[str, object]],
    record_property: RecordProperty,
) -> None:
    traffic = Traffic(
        platform.gateway_target,
        platform.api_key,
        conversations=6,
        min_turns=4,
        max_turns=4,
        options_for=lambda c, t: burst_plan(c, t)[0],
    )

    async def no_other_fault(_: Traffic) -> None:
        return None  # the faults ride on the requests themselves

    await traffic.run(no_other_fault)
    report = await account("provider-429-500", traffic, mongo, platform.database)
    publish_report(report, record_property)

    assert_nothing_lost_or_duplicated(report)
    assert (report.accepted, report.completed, report.clear_errors) == (24, 24 - 2, 2)
    failing = [
        r for r in traffic.records if burst_plan(r.conversation, r.turn)[1][-1][1] != "completed"
    ]
    assert [r.last_kind for r in failing] == ["error", "error"]
    # The faults really happened, as planned, and Retry-After was honoured.
    entries = journal(platform.simulator_url)
    injected: dict[str, int] = {"error 429": 0, "error 500": 0}
    for record in traffic.records:
        calls = calls_for(platform.simulator_url, record.request.request_id, entries)
        expected = burst_plan(record.conversation, record.turn)[1]
        assert [(c["api"], c["outcome"]) for c in calls] == expected, record.request.request_id
        for earlier, later in itertools.pairwise(calls):
            if earlier["outcome"] == "error 429":
                retry_after_s = int(record.request.options.metadata["sim.retry_after_ms"]) / 1000
                assert later["time"] - earlier["time"] >= retry_after_s
        for call in calls:
            if call["outcome"] in injected:
                injected[call["outcome"]] += 1
    print(f"  provider faults injected: {injected}")
    assert injected["error 429"] >= 10 and injected["error 500"] >= 10


@dataclass
class KafkaStack:
    kafka: PrivateKafka
    platform: PrivatePlatform


@pytest.fixture(scope="module")
def kafka_stack(platform: Platform) -> Iterator[KafkaStack]:
    """A private Kafka broker and a private platform on it (memory on the shared FerretDB)."""
    LOGS.mkdir(parents=True, exist_ok=True)
    with temp_dir("sb-faults-kafka-") as home:
        kafka = PrivateKafka(home, LOGS / "faults-kafka.log")
        try:
            asyncio.run(kafka.start())
            with private_platform(
                platform,
                "faults-kafka",
                kafka=kafka.bootstrap,
                env={
                    # Consumers notice a gone broker and rejoin their groups quickly.
                    "SWITCHBOARD_KAFKA_SESSION_TIMEOUT_MS": "6000",
                    "SWITCHBOARD_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
                },
            ) as plat:
                yield KafkaStack(kafka, plat)
        finally:
            asyncio.run(kafka.stop())


@dataclass
class FerretStack:
    ferretdb: PrivateFerretDB
    platform: PrivatePlatform


@pytest.fixture(scope="module")
def ferretdb_stack(platform: Platform) -> Iterator[FerretStack]:
    """A private FerretDB and a private platform whose memory stores in it."""
    LOGS.mkdir(parents=True, exist_ok=True)
    with temp_dir("sb-faults-ferretdb-") as home:
        ferretdb = PrivateFerretDB(home, LOGS / "faults-ferretdb.log")
        try:
            ferretdb.start()
            with private_platform(
                platform, "faults-ferretdb", mongo_url=ferretdb.url, memory_env=SHORT_MONGO_BOUNDS
            ) as plat:
                yield FerretStack(ferretdb, plat)
        finally:
            ferretdb.stop()


async def private_account(
    mongo_url: str, plat: PrivatePlatform, fault: str, traffic: Traffic
) -> FaultReport:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_url, serverSelectionTimeoutMS=5_000
    )
    try:
        return await account(fault, traffic, client, plat.database, store_wait_s=60)
    finally:
        await client.close()


# This test found that aiokafka's idempotent producer stops for good (OutOfOrderSequenceNumber)
# once a batch expires while a partition has no leader (aio-libs/aiokafka#1017); the producers
# are therefore not idempotent (libs/common/src/switchboard/common/kafka/broker.py).
# SWITCHBOARD_E2E_KAFKA_DOWN_S=10 keeps the broker down past the producers' request timeout.
async def test_a_kafka_broker_restart_during_traffic_loses_nothing(
    kafka_stack: KafkaStack, record_property: RecordProperty
) -> None:
    stack = kafka_stack
    traffic = Traffic(
        stack.platform.gateway_target,
        stack.platform.api_key,
        conversations=6,
        min_turns=4,
        max_turns=6,
        options_for=lambda _c, _t: cheap(delay_ms="25", tokens="40"),  # about 1 s a turn
    )
    timeline: dict[str, float] = {}
    caught: list[TurnRecord] = []

    async def restart_the_broker(traffic: Traffic) -> None:
        await traffic.until(
            lambda t: sum(r.completed for r in t.records) >= 6 and len(t.in_flight()) >= 3
        )
        caught.extend(traffic.in_flight())
        timeline["stopping"] = time.monotonic()
        await stack.kafka.stop()
        timeline["stopped"] = time.monotonic()
        await asyncio.sleep(KAFKA_DOWN_S)
        await stack.kafka.start()
        timeline["ready"] = time.monotonic()

    await traffic.run(restart_the_broker)
    report = await private_account(MONGO, stack.platform, "kafka-restart", traffic)
    publish_report(report, record_property)
    print(
        f"  broker stopped in {timeline['stopped'] - timeline['stopping']:.1f} s, "
        f"answering again {timeline['ready'] - timeline['stopped']:.1f} s later; "
        f"{len(caught)} streams in flight at the stop"
    )

    assert_nothing_lost_or_duplicated(report)
    assert len(caught) >= 3 and all(r.ended_at and r.ended_at > timeline["stopped"] for r in caught)
    assert any(r.completed and r.sent_at > timeline["ready"] for r in traffic.records), (
        "traffic completes after the restart"
    )


async def test_ferretdb_stopped_for_20_seconds_during_traffic_loses_nothing(
    ferretdb_stack: FerretStack, record_property: RecordProperty
) -> None:
    stack = ferretdb_stack
    traffic = Traffic(
        stack.platform.gateway_target,
        stack.platform.api_key,
        conversations=6,
        min_turns=3,
        max_turns=12,
        think_s=2.0,
        options_for=lambda _c, _t: cheap(delay_ms="25", tokens="40"),
    )
    outage: list[float] = []

    async def stop_ferretdb(traffic: Traffic) -> None:
        await traffic.until(lambda t: sum(r.completed for r in t.records) >= 6)
        await asyncio.to_thread(stack.ferretdb.stop)
        outage.append(time.monotonic())
        await asyncio.sleep(FERRETDB_DOWN_S)
        await asyncio.to_thread(stack.ferretdb.start)
        outage.append(time.monotonic())

    await traffic.run(stop_ferretdb)
    report = await private_account(stack.ferretdb.url, stack.platform, "ferretdb-20s", traffic)
    publish_report(report, record_property)

    assert_nothing_lost_or_duplicated(report)
    down, up = outage
    print(
        f"  {sum(down < r.sent_at < up for r in traffic.records)} requests sent while it was down"
    )
    during = [
        r
        for r in traffic.records
        if r.completed and down < r.sent_at and r.ended_at and r.ended_at < up
    ]
    assert len(during) >= 6, "chats complete while MongoDB is away"
    assert report.completed == report.requests, "MongoDB away costs no chat"
