"""Done-when of the memory issue: with MongoDB stopped in the middle of a conversation,
chats still complete, and after it returns every turn is stored exactly once.

The shared FerretDB serves every other test, so this one runs a private FerretDB (its own
port and SQLite directory) under a private platform: memory, orchestrator, llm-worker and
gateway on a topic prefix of their own; only the provider simulator is shared. The FerretDB
binary is `<repo>/.local/bin/ferretdb` (installed by `deploy/local/stack.sh`), or
`SWITCHBOARD_FERRETDB_BIN` (e.g. in a git worktree without its own `.local`).
"""

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pymongo import AsyncMongoClient

from switchboard.v1.chat_pb2 import ROLE_ASSISTANT, ROLE_USER, ChatEvent, ChatRequest
from switchboard.v1.chat_pb2_grpc import ChatServiceStub
from switchboard.v1.memory_pb2 import GetContextRequest
from switchboard.v1.memory_pb2_grpc import MemoryServiceStub

from .conftest import (
    KAFKA,
    LOGS,
    MONGO,
    REDIS,
    ROOT,
    Platform,
    _create_topics,
    _delete_topics,
    _wait_ready,
)
from .memory_support import eventually

pytestmark = pytest.mark.e2e

FERRETDB_BIN = Path(os.environ.get("SWITCHBOARD_FERRETDB_BIN", ROOT / ".local/bin/ferretdb"))
START_TIMEOUT_S = 15.0
RECOVERY_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PrivateFerretDB:
    """A FerretDB of this test alone, which it may stop and start at will."""

    def __init__(self, data_dir: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"mongodb://127.0.0.1:{self.port}/"
        self._data_dir = data_dir
        self._log = log
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [
                str(FERRETDB_BIN),
                "-listen-addr",
                f"127.0.0.1:{self.port}",
                "-sqlite-dir",
                str(self._data_dir),
                "-log-level",
                "warn",
            ],
            stdout=self._log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                pytest.fail(f"private FerretDB exited:\n{self._log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        pytest.fail(f"private FerretDB not listening within {START_TIMEOUT_S}s")

    def kill(self) -> None:
        """Stop it the hard way, as a crash or a lost node would."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


@dataclass
class OutagePlatform:
    ferretdb: PrivateFerretDB
    prefix: str
    database: str
    gateway_target: str
    memory_target: str
    memory_group: str
    simulator_url: str
    api_key: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def outage_platform(platform: Platform) -> Iterator[OutagePlatform]:
    if not FERRETDB_BIN.is_file():
        pytest.fail(
            f"no FerretDB binary at {FERRETDB_BIN}: run deploy/local/stack.sh up, "
            "or point SWITCHBOARD_FERRETDB_BIN at one"
        )
    run_id = uuid.uuid4().hex[:8]
    data_dir = Path(tempfile.mkdtemp(prefix="sb-outage-ferretdb-"))
    LOGS.mkdir(parents=True, exist_ok=True)
    ferretdb = PrivateFerretDB(data_dir, LOGS / "outage-ferretdb.log")
    ports = {name: free_port() for name in ("gateway", "memory")}
    health = {name: free_port() for name in ("gateway", "memory", "orchestrator", "llm-worker")}
    plat = OutagePlatform(
        ferretdb=ferretdb,
        prefix=f"e2e-{run_id}-outage.",
        database=f"outage_{run_id}",
        gateway_target=f"127.0.0.1:{ports['gateway']}",
        memory_target=f"127.0.0.1:{ports['memory']}",
        memory_group=f"e2e-{run_id}-outage-memory",
        simulator_url=platform.simulator_url,
        api_key=platform.api_key,
    )
    base_env = {
        **os.environ,
        "SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS": KAFKA,
        "SWITCHBOARD_KAFKA_TOPIC_PREFIX": plat.prefix,
        "SWITCHBOARD_REDIS_URL": REDIS,
        "SWITCHBOARD_TELEMETRY_LOG_LEVEL": "INFO",
        "OPENAI_BASE_URL": f"{platform.simulator_url}/v1",
        "ANTHROPIC_BASE_URL": platform.simulator_url,
    }
    for secret in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        base_env.pop(secret, None)
    services = [
        (
            "memory",
            "switchboard.memory",
            {
                "SWITCHBOARD_MEMORY_GRPC_PORT": str(ports["memory"]),
                "SWITCHBOARD_MEMORY_MONGO_URL": ferretdb.url,
                "SWITCHBOARD_MEMORY_DATABASE": plat.database,
                "SWITCHBOARD_MEMORY_CONSUMER_GROUP": plat.memory_group,
                # Short bounds so that the outage shows within seconds.
                "SWITCHBOARD_MEMORY_MONGO_TIMEOUT_MS": "500",
                "SWITCHBOARD_MEMORY_WRITE_ATTEMPTS": "3",
                "SWITCHBOARD_MEMORY_WRITE_BACKOFF_MAX_S": "0.5",
                "SWITCHBOARD_MEMORY_CONTEXT_READ_TIMEOUT_S": "0.5",
            },
        ),
        (
            "llm-worker",
            "switchboard.llm_worker",
            {
                "SWITCHBOARD_LLM_WORKER_TIERS": "cheap",
                "SWITCHBOARD_LLM_WORKER_CONSUMER_GROUP_PREFIX": f"e2e-{run_id}-outage-worker",
            },
        ),
        (
            "orchestrator",
            "switchboard.orchestrator",
            {
                "SWITCHBOARD_ORCHESTRATOR_MEMORY_TARGET": plat.memory_target,
                "SWITCHBOARD_ORCHESTRATOR_CONSUMER_GROUP": f"e2e-{run_id}-outage-orchestrator",
                "SWITCHBOARD_ORCHESTRATOR_MONGO_URL": MONGO,
                "SWITCHBOARD_ORCHESTRATOR_DATABASE": platform.database,
            },
        ),
        (
            "gateway",
            "switchboard.gateway",
            {
                "SWITCHBOARD_GATEWAY_GRPC_PORT": str(ports["gateway"]),
                "SWITCHBOARD_GATEWAY_INSTANCE_ID": f"e2e-{run_id}-outage",
                "SWITCHBOARD_GATEWAY_MEMORY_TARGET": plat.memory_target,
                # Tenants (and the API key) come from the main platform's database on the
                # shared FerretDB; only memory's private FerretDB goes down in this test.
                "SWITCHBOARD_MONGO_URL": MONGO,
                "SWITCHBOARD_MONGO_DATABASE": platform.database,
            },
        ),
    ]
    try:
        ferretdb.start()
        asyncio.run(_create_topics(plat.prefix))
        for name, module, env in services:
            log = LOGS / f"outage-{name}.log"
            plat.processes[name] = subprocess.Popen(
                [sys.executable, "-m", module],
                env={**base_env, **env, "SWITCHBOARD_HEALTH_PORT": str(health[name])},
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        for name, _, _ in services:
            _wait_ready(
                name,
                f"http://127.0.0.1:{health[name]}/readyz",
                plat.processes[name],
                LOGS / f"outage-{name}.log",
            )
        yield plat
    finally:
        for process in reversed(plat.processes.values()):
            process.send_signal(signal.SIGTERM)
        for process in plat.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        ferretdb.stop()
        asyncio.run(_delete_topics(plat.prefix))
        shutil.rmtree(data_dir, ignore_errors=True)


def journal(simulator_url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{simulator_url}/_journal", timeout=5) as response:
        entries: list[dict[str, Any]] = json.load(response)["requests"]
        return entries


async def memory_lag(plat: OutagePlatform) -> int:
    """Records of `chat.turns` not yet committed by the memory service's group."""
    topic = plat.prefix + "chat.turns"
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(plat.memory_group)
        partitions = [TopicPartition(topic, p) for p in range(8)]
        ends = await consumer.end_offsets(partitions)
        lag = 0
        for partition, end in ends.items():
            done = committed.get(partition)
            lag += end - (done.offset if done is not None and done.offset >= 0 else 0)
        return lag
    finally:
        await consumer.stop()
        await admin.close()


@pytest.fixture
async def private_mongo(
    outage_platform: OutagePlatform,
) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        outage_platform.ferretdb.url, serverSelectionTimeoutMS=2_000
    )
    yield client
    await client.close()


async def test_chats_complete_during_a_mongodb_outage_and_every_turn_is_stored_once(
    outage_platform: OutagePlatform, private_mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    plat = outage_platform
    marker = uuid.uuid4().hex[:8]
    messages_db = private_mongo[plat.database]["messages"]
    texts = [
        f"[{marker}] Hello, my name is Olga Petrova and my order 5150 is missing.",
        f"[{marker}] It was due last Friday.",
        f"[{marker}] The tracking number ends in 998.",
        f"[{marker}] Please send a replacement.",
    ]
    request_ids: list[str] = []
    conversation = ""

    async with (
        grpc.aio.insecure_channel(plat.gateway_target) as channel,
        grpc.aio.insecure_channel(plat.memory_target) as memory_channel,
    ):
        chat = ChatServiceStub(channel)
        memory = MemoryServiceStub(memory_channel)
        auth = [("authorization", f"Bearer {plat.api_key}")]

        async def say(text: str) -> list[ChatEvent]:
            request = ChatRequest(conversation_id=conversation, message=text, user_id="olga")
            events = [e async for e in chat.Chat(request, metadata=auth, timeout=60)]
            assert events[-1].WhichOneof("event") == "done", (text, events[-1])
            request_ids.append(events[0].request_id)
            return events

        conversation = (await say(texts[0]))[0].started.conversation_id
        await eventually(
            lambda: messages_db.count_documents({"conversation_id": conversation}),
            lambda n: n == 2,
        )

        async def remembered() -> list[str]:
            context = await memory.GetContext(
                GetContextRequest(tenant_id="demo", conversation_id=conversation), timeout=20
            )
            return [m.text for m in context.messages]

        plat.ferretdb.kill()
        outage_started = time.monotonic()
        for text in texts[1:]:
            await say(text)  # every chat completes while MongoDB is away
            # The next message follows once memory has the turn (in its cache, as the store is
            # away): a client may be faster than the turn's way through Kafka on a loaded
            # machine, and then its prompt rightly lacks that turn.
            await eventually(remembered, lambda seen, text=text: text in seen)

        # Contexts came from memory's cache: each prompt still carried the earlier turns.
        prompts = {
            entry["body"]["messages"][-1]["content"]: [
                m["content"] for m in entry["body"]["messages"][:-1]
            ]
            for entry in journal(plat.simulator_url)
            if entry["api"] == "openai"
            and entry["body"]["messages"][-1]["content"].startswith(f"[{marker}]")
        }
        assert texts[0] in prompts[texts[1]]
        assert texts[0] in prompts[texts[2]] and texts[1] in prompts[texts[2]]
        # Memory gives up on the store after its own bound (0.5 s here); the deadline only
        # has to cover a slow, loaded machine.
        context = await memory.GetContext(
            GetContextRequest(tenant_id="demo", conversation_id=conversation), timeout=20
        )
        assert context.degraded
        assert texts[0] in [m.text for m in context.messages]
        # Nothing was committed past what MongoDB acknowledged.
        assert await memory_lag(plat) >= 3

        # Keep MongoDB away a little longer: several write/NACK/redelivery cycles.
        await asyncio.sleep(max(0.0, 3.0 - (time.monotonic() - outage_started)))
        plat.ferretdb.start()

        docs = await eventually(
            lambda: messages_db.find({"conversation_id": conversation}).sort("position").to_list(),
            lambda found: len(found) >= 2 * len(texts),
            timeout_s=RECOVERY_TIMEOUT_S,
        )
        lag = await eventually(lambda: memory_lag(plat), lambda n: n == 0, timeout_s=10)

    assert [(d["request_id"], d["role"]) for d in docs] == [
        (request_id, role) for request_id in request_ids for role in (ROLE_USER, ROLE_ASSISTANT)
    ], "every turn stored exactly once, in order"
    assert [d["text"] for d in docs if d["role"] == ROLE_USER] == texts
    assert {d["tenant_id"] for d in docs} == {"demo"}
    assert lag == 0, "memory caught up and committed everything"
    conversation_doc = await private_mongo[plat.database]["conversations"].find_one(
        {"conversation_id": conversation}
    )
    assert conversation_doc is not None and conversation_doc["message_count"] == 2 * len(texts)
