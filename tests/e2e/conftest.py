"""The real platform for end-to-end tests.

The stack (Kafka, FerretDB, Redis) must run: `make test` starts it. Each test session
then starts the simulator and the four services as separate processes, on their own
ports, with a topic prefix, consumer groups and a database of their own, so that it
never disturbs (nor is disturbed by) a `make up` running beside it.
"""

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from pymongo import AsyncMongoClient

from switchboard.common.tenants import (
    RateLimits,
    TenantConfig,
    TenantStore,
    hash_api_key,
    load_seed,
)
from switchboard.common.topics import read_topic_specs

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / ".local" / "logs" / "e2e"
KAFKA = os.environ.get("SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
MONGO = os.environ.get("SWITCHBOARD_E2E_MONGO_URL", "mongodb://127.0.0.1:27017/")
REDIS = os.environ.get("SWITCHBOARD_REDIS_URL", "redis://127.0.0.1:6379/0")
JAEGER_OTLP = os.environ.get("SWITCHBOARD_E2E_OTLP_ENDPOINT", "http://127.0.0.1:4317")
JAEGER_QUERY = os.environ.get("SWITCHBOARD_E2E_JAEGER_URL", "http://127.0.0.1:16686")
READY_TIMEOUT_S = float(os.environ.get("SWITCHBOARD_E2E_READY_TIMEOUT_S", "60"))
API_KEY = "e2e-api-key"
# A second tenant, for isolation tests.
OTHER_TENANT = "e2e-other"
OTHER_API_KEY = "e2e-other-api-key"
# Generous limits: the suite's own pace must never trip them (tests of limits seed their own).
E2E_RATE_LIMITS = RateLimits(requests_per_minute=100_000, requests_per_minute_per_user=100_000)

# Test ports sit apart from the `make up` defaults (15051/15052, 808x, 8400); an offset
# (a multiple of 1000) lets several checkouts run the suite at once on one stack. All stay
# below Linux's ephemeral range (32768-60999): a fixed port inside it can be taken by any
# outgoing connection, and a service then fails to bind (seen with 50052).
PORT_OFFSET = int(os.environ.get("SWITCHBOARD_E2E_PORT_OFFSET", "0"))
SIM_PORT = 18400 + PORT_OFFSET
GATEWAY_PORT = 19161 + PORT_OFFSET
MEMORY_PORT = 19162 + PORT_OFFSET
HTTP_PORT = 19163 + PORT_OFFSET
HTTP_URL = f"http://127.0.0.1:{HTTP_PORT}"
WIDGET_KEY = "pk-demo-widget"  # the demo tenant's publishable key (deploy/local/tenants.yaml)
KNOWLEDGE_PORT = 19164 + PORT_OFFSET
KNOWLEDGE_MAX_DOCUMENT_BYTES = 40_000
DEMO_ORDERS_PORT = 18086 + PORT_OFFSET
HEALTH_PORTS = {
    name: 18180 + PORT_OFFSET + n
    for n, name in enumerate(
        ("gateway", "orchestrator", "memory", "llm-worker", "knowledge"), start=1
    )
}


def topic_specs(prefix: str) -> list[tuple[str, int]]:
    """The stack's topics (deploy/local/kafka/topics.txt) under `prefix`."""
    return read_topic_specs(ROOT / "deploy/local/kafka/topics.txt", prefix)


@dataclass
class Platform:
    """Addresses and names of the running test platform."""

    run_id: str
    topic_prefix: str
    database: str
    gateway_target: str = f"127.0.0.1:{GATEWAY_PORT}"
    http_url: str = HTTP_URL
    simulator_url: str = f"http://127.0.0.1:{SIM_PORT}"
    demo_orders_url: str = f"http://127.0.0.1:{DEMO_ORDERS_PORT}"
    api_key: str = API_KEY
    other_api_key: str = OTHER_API_KEY
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # The environment every service process starts with.
    env: dict[str, str] = field(default_factory=dict)

    def topic(self, name: str) -> str:
        return self.topic_prefix + name


def _wait_ready(name: str, url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{name} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"{name} not ready at {url} within {READY_TIMEOUT_S}s:\n{log.read_text()[-3000:]}")


async def _create_topics(prefix: str, bootstrap: str = KAFKA) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(name, num_partitions=n, replication_factor=1)
                for name, n in topic_specs(prefix)
            ]
        )
    finally:
        await admin.close()


async def _delete_topics(prefix: str, bootstrap: str = KAFKA) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if existing:
            await admin.delete_topics(existing)
    finally:
        await admin.close()


# A second tenant whose policy lets personal data reach its provider (secrets never do):
# the output guardrail is what keeps it from the client and from storage.
RAW_TENANT = "e2e-raw"


async def _seed_tenants(database: str, demo_orders_url: str) -> None:
    """The tenants of deploy/local/tenants.yaml (the demo tenant's key is API_KEY), pointed at
    this run's demo order service, plus OTHER_TENANT and RAW_TENANT."""
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        MONGO, serverSelectionTimeoutMS=5_000
    )
    try:
        store = TenantStore(client, database)  # type: ignore[arg-type]
        tenants = load_seed(
            ROOT / "deploy/local/tenants.yaml", {"SWITCHBOARD_DEV_API_KEY": API_KEY}
        )
        for tenant in tenants:
            for tool in tenant.tools:
                if isinstance(tool.get("url"), str):
                    tool["url"] = tool["url"].replace("http://127.0.0.1:8086", demo_orders_url)
            # The widget's pages are served by this run's gateway.
            tenant.allowed_origins = [HTTP_URL] if tenant.allowed_origins else []
            # Generous limits: the suite's own traffic must not trip them.
            tenant.rate_limits = E2E_RATE_LIMITS
            await store.upsert(tenant)
        raw = TenantConfig(tenant_id=RAW_TENANT, name="Raw Data Inc.")
        raw.guardrails.redact_pii = False
        await store.upsert(raw)
        await store.upsert(
            TenantConfig(
                tenant_id=OTHER_TENANT,
                name="Other Corp",
                api_key_sha256=[hash_api_key(OTHER_API_KEY)],
                rate_limits=E2E_RATE_LIMITS,
            )
        )
    finally:
        await client.close()


def worker_env(run_id: str) -> dict[str, str]:
    """The environment of the test platform's llm-workers (one, or more for crash tests)."""
    return {
        "SWITCHBOARD_LLM_WORKER_TIERS": "cheap,frontier",
        "SWITCHBOARD_LLM_WORKER_CONSUMER_GROUP_PREFIX": f"e2e-{run_id}-llm-worker",
        # Fast retries, and short sessions so that a killed worker is noticed quickly.
        "SWITCHBOARD_LLM_WORKER_RETRY_BACKOFF_INITIAL_S": "0.05",
        "SWITCHBOARD_LLM_WORKER_RETRY_BACKOFF_MAX_S": "0.2",
        "SWITCHBOARD_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "SWITCHBOARD_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
    }


@pytest.fixture(scope="session")
def platform() -> Iterator[Platform]:
    """Start the simulator and the four services; stop them and clean up at the end."""
    run_id = uuid.uuid4().hex[:8]
    plat = Platform(run_id=run_id, topic_prefix=f"e2e-{run_id}.", database=f"e2e_{run_id}")
    try:
        asyncio.run(_create_topics(plat.topic_prefix))
    except Exception as exc:  # the stack is a precondition of this suite
        pytest.fail(f"Kafka at {KAFKA} is unreachable ({exc!r}); start it with `make stack-up`")
    asyncio.run(_seed_tenants(plat.database, plat.demo_orders_url))
    LOGS.mkdir(parents=True, exist_ok=True)
    base_env = {
        **os.environ,
        "SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS": KAFKA,
        "SWITCHBOARD_KAFKA_TOPIC_PREFIX": plat.topic_prefix,
        "SWITCHBOARD_REDIS_URL": REDIS,
        "SWITCHBOARD_TELEMETRY_LOG_LEVEL": "INFO",
        # Spans go to the stack's Jaeger (OTLP on 4317), flushed quickly for the trace test.
        "SWITCHBOARD_TELEMETRY_EXPORTER": "otlp",
        "SWITCHBOARD_TELEMETRY_OTLP_ENDPOINT": JAEGER_OTLP,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        # Lag gauges refresh fast enough to be read within a test.
        "SWITCHBOARD_KAFKA_LAG_REPORT_INTERVAL_S": "1",
        # The services must reach the test simulator, never a real provider.
        "OPENAI_BASE_URL": f"{plat.simulator_url}/v1",
        "ANTHROPIC_BASE_URL": plat.simulator_url,
    }
    for secret in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        base_env.pop(secret, None)
    plat.env = base_env
    services = [
        (
            "simulator",
            "switchboard.simulator",
            {
                "SWITCHBOARD_SIM_PORT": str(SIM_PORT),
                "SWITCHBOARD_SIM_TTFT_MS": "0",
                "SWITCHBOARD_SIM_TOKEN_DELAY_MS": "1",
            },
            f"{plat.simulator_url}/_health",
        ),
        (
            "demo-orders",
            "switchboard.demo_orders",
            {"SWITCHBOARD_DEMO_ORDERS_PORT": str(DEMO_ORDERS_PORT)},
            f"{plat.demo_orders_url}/_health",
        ),
        (
            "memory",
            "switchboard.memory",
            {
                "SWITCHBOARD_MEMORY_GRPC_PORT": str(MEMORY_PORT),
                "SWITCHBOARD_MEMORY_MONGO_URL": MONGO,
                # Roomy bounds on the context path: on a loaded CI machine a 1 s read may time
                # out, and the degraded mode has a test of its own (test_memory_outage.py).
                "SWITCHBOARD_MEMORY_CONTEXT_READ_TIMEOUT_S": "8",
                "SWITCHBOARD_MEMORY_DATABASE": plat.database,
                "SWITCHBOARD_MEMORY_CONSUMER_GROUP": f"e2e-{run_id}-memory",
                "SWITCHBOARD_HEALTH_PORT": str(HEALTH_PORTS["memory"]),
            },
            f"http://127.0.0.1:{HEALTH_PORTS['memory']}/readyz",
        ),
        (
            "knowledge",
            "switchboard.knowledge",
            {
                "SWITCHBOARD_KNOWLEDGE_GRPC_PORT": str(KNOWLEDGE_PORT),
                "SWITCHBOARD_KNOWLEDGE_MONGO_URL": MONGO,
                "SWITCHBOARD_KNOWLEDGE_DATABASE": plat.database,
                # Small, so that the size check is reached below the gateway's 64 KiB limit.
                "SWITCHBOARD_KNOWLEDGE_MAX_DOCUMENT_BYTES": str(KNOWLEDGE_MAX_DOCUMENT_BYTES),
                "SWITCHBOARD_HEALTH_PORT": str(HEALTH_PORTS["knowledge"]),
            },
            f"http://127.0.0.1:{HEALTH_PORTS['knowledge']}/readyz",
        ),
        (
            "llm-worker",
            "switchboard.llm_worker",
            {
                **worker_env(run_id),
                "SWITCHBOARD_HEALTH_PORT": str(HEALTH_PORTS["llm-worker"]),
            },
            f"http://127.0.0.1:{HEALTH_PORTS['llm-worker']}/readyz",
        ),
        (
            "orchestrator",
            "switchboard.orchestrator",
            {
                "SWITCHBOARD_ORCHESTRATOR_MEMORY_TARGET": f"127.0.0.1:{MEMORY_PORT}",
                "SWITCHBOARD_ORCHESTRATOR_MEMORY_TIMEOUT_S": "10",
                "SWITCHBOARD_ORCHESTRATOR_KNOWLEDGE_TARGET": f"127.0.0.1:{KNOWLEDGE_PORT}",
                # Roomy on a loaded CI machine; the turn goes on without passages past it.
                "SWITCHBOARD_ORCHESTRATOR_KNOWLEDGE_TIMEOUT_S": "10",
                "SWITCHBOARD_ORCHESTRATOR_CONSUMER_GROUP": f"e2e-{run_id}-orchestrator",
                "SWITCHBOARD_ORCHESTRATOR_MONGO_URL": MONGO,
                "SWITCHBOARD_ORCHESTRATOR_DATABASE": plat.database,
                "SWITCHBOARD_ORCHESTRATOR_HTTP_TOOL_ALLOWED_HOSTS": f"127.0.0.1:{DEMO_ORDERS_PORT}",
                "SWITCHBOARD_HEALTH_PORT": str(HEALTH_PORTS["orchestrator"]),
            },
            f"http://127.0.0.1:{HEALTH_PORTS['orchestrator']}/readyz",
        ),
        (
            "gateway",
            "switchboard.gateway",
            {
                "SWITCHBOARD_GATEWAY_GRPC_PORT": str(GATEWAY_PORT),
                "SWITCHBOARD_GATEWAY_HTTP_PORT": str(HTTP_PORT),
                "SWITCHBOARD_GATEWAY_INSTANCE_ID": f"e2e-{run_id}",
                "SWITCHBOARD_GATEWAY_MEMORY_TARGET": f"127.0.0.1:{MEMORY_PORT}",
                "SWITCHBOARD_GATEWAY_KNOWLEDGE_TARGET": f"127.0.0.1:{KNOWLEDGE_PORT}",
                "SWITCHBOARD_MONGO_URL": MONGO,
                "SWITCHBOARD_MONGO_DATABASE": plat.database,
                "SWITCHBOARD_HEALTH_PORT": str(HEALTH_PORTS["gateway"]),
            },
            f"http://127.0.0.1:{HEALTH_PORTS['gateway']}/readyz",
        ),
    ]
    try:
        for name, module, env, _ in services:
            log = LOGS / f"{name}.log"
            plat.processes[name] = subprocess.Popen(
                [sys.executable, "-m", module],
                env={**base_env, **env},
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        for name, _, _, url in services:
            _wait_ready(name, url, plat.processes[name], LOGS / f"{name}.log")
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
        asyncio.run(_delete_topics(plat.topic_prefix))
        # The run's database is left in place: FerretDB 1.24 (SQLite backend) can crash with
        # SIGBUS after dropping a database whose WAL its pool still maps. It is small and
        # unique to the run; `deploy/local/stack.sh down --purge` clears all local data.


async def seed_tenants(database: str, *tenants: TenantConfig) -> None:
    """Create or replace tenants in the test database."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        MONGO, serverSelectionTimeoutMS=5_000
    )
    try:
        store = TenantStore(client, database)
        for tenant in tenants:
            await store.upsert(tenant)
    finally:
        await client.close()


@pytest.fixture
async def mongo(platform: Platform) -> AsyncIterator[AsyncMongoClient[dict[str, object]]]:
    """A client of the test database's server."""
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        MONGO, serverSelectionTimeoutMS=5_000, tz_aware=True
    )
    yield client
    await client.close()


async def _group_members(group_ids: list[str]) -> dict[str, int]:
    """How many members of each group hold partitions, once the group is stable (else 0)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA, request_timeout_ms=10_000)
    await admin.start()
    try:
        counts = dict.fromkeys(group_ids, 0)
        # One group per request: aiokafka cannot parse some answers about several groups.
        for group_id in group_ids:
            for response in await admin.describe_consumer_groups([group_id]):
                for group in response.groups:
                    # (error_code, group_id, state, protocol_type, protocol, members)
                    state, members = group[2], group[5]
                    if state == "Stable":
                        counts[group_id] = sum(
                            1
                            for member in members
                            if member[-1]
                            and ConsumerProtocolMemberAssignment.decode(member[-1]).partitions()
                        )
        return counts
    finally:
        await admin.close()


@dataclass
class ExtraWorker:
    """An llm-worker process started beside the platform's, in the same consumer groups."""

    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture
def second_worker(platform: Platform) -> Iterator[ExtraWorker]:
    """A second llm-worker for both tiers; ready once every tier's group has two members
    holding partitions. The test may kill it; otherwise it is stopped at the end."""
    port = 18186 + PORT_OFFSET  # after HEALTH_PORTS
    log = LOGS / "llm-worker-2.log"
    env = {
        **platform.env,
        **worker_env(platform.run_id),
        "SWITCHBOARD_LLM_WORKER_INSTANCE_ID": f"e2e-{platform.run_id}-second",
        "SWITCHBOARD_HEALTH_PORT": str(port),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "switchboard.llm_worker"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        _wait_ready("second llm-worker", f"http://127.0.0.1:{port}/readyz", process, log)
        groups = [f"e2e-{platform.run_id}-llm-worker-{tier}" for tier in ("cheap", "frontier")]
        deadline = time.monotonic() + READY_TIMEOUT_S
        while asyncio.run(_group_members(groups)) != dict.fromkeys(groups, 2):
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the worker groups did not rebalance to two members:\n{log.read_text()}"
                )
            time.sleep(0.2)
        yield ExtraWorker(process, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
