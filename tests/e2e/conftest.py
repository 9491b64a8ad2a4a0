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
from pymongo import AsyncMongoClient

from switchboard.common.tenants import RateLimits, TenantConfig, TenantStore, hash_api_key

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / ".local" / "logs" / "e2e"
KAFKA = os.environ.get("SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
MONGO = os.environ.get("SWITCHBOARD_E2E_MONGO_URL", "mongodb://127.0.0.1:27017/")
REDIS = os.environ.get("SWITCHBOARD_REDIS_URL", "redis://127.0.0.1:6379/0")
READY_TIMEOUT_S = float(os.environ.get("SWITCHBOARD_E2E_READY_TIMEOUT_S", "60"))
API_KEY = "e2e-api-key"
# A second tenant, for isolation tests.
OTHER_TENANT = "e2e-other"
OTHER_API_KEY = "e2e-other-api-key"
# Generous limits: the suite's own pace must never trip them (tests of limits seed their own).
E2E_RATE_LIMITS = RateLimits(requests_per_minute=100_000, requests_per_minute_per_user=100_000)

# Test ports sit apart from the `make up` defaults (50051/50052, 808x, 8400); an offset
# (a multiple of 1000) lets several checkouts run the suite at once on one stack.
PORT_OFFSET = int(os.environ.get("SWITCHBOARD_E2E_PORT_OFFSET", "0"))
SIM_PORT = 18400 + PORT_OFFSET
GATEWAY_PORT = 50161 + PORT_OFFSET
MEMORY_PORT = 50162 + PORT_OFFSET
HEALTH_PORTS = {
    name: 18180 + PORT_OFFSET + n
    for n, name in enumerate(("gateway", "orchestrator", "memory", "llm-worker"), start=1)
}


def topic_specs(prefix: str) -> list[tuple[str, int]]:
    """The stack's topics (deploy/local/kafka/topics.txt) under `prefix`."""
    specs = []
    for line in (ROOT / "deploy/local/kafka/topics.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, partitions = line.split()
            specs.append((prefix + name, int(partitions)))
    return specs


@dataclass
class Platform:
    """Addresses and names of the running test platform."""

    run_id: str
    topic_prefix: str
    database: str
    gateway_target: str = f"127.0.0.1:{GATEWAY_PORT}"
    simulator_url: str = f"http://127.0.0.1:{SIM_PORT}"
    api_key: str = API_KEY
    other_api_key: str = OTHER_API_KEY
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

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


async def _create_topics(prefix: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA, request_timeout_ms=10_000)
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


async def _delete_topics(prefix: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA, request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if existing:
            await admin.delete_topics(existing)
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def platform() -> Iterator[Platform]:
    """Start the simulator and the four services; stop them and clean up at the end."""
    run_id = uuid.uuid4().hex[:8]
    plat = Platform(run_id=run_id, topic_prefix=f"e2e-{run_id}.", database=f"e2e_{run_id}")
    try:
        asyncio.run(_create_topics(plat.topic_prefix))
    except Exception as exc:  # the stack is a precondition of this suite
        pytest.fail(f"Kafka at {KAFKA} is unreachable ({exc!r}); start it with `make stack-up`")
    asyncio.run(_seed_tenants(plat.database))
    LOGS.mkdir(parents=True, exist_ok=True)
    base_env = {
        **os.environ,
        "SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS": KAFKA,
        "SWITCHBOARD_KAFKA_TOPIC_PREFIX": plat.topic_prefix,
        "SWITCHBOARD_REDIS_URL": REDIS,
        "SWITCHBOARD_TELEMETRY_LOG_LEVEL": "INFO",
        # The services must reach the test simulator, never a real provider.
        "OPENAI_BASE_URL": f"{plat.simulator_url}/v1",
        "ANTHROPIC_BASE_URL": plat.simulator_url,
    }
    for secret in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        base_env.pop(secret, None)
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
            "memory",
            "switchboard.memory",
            {
                "SWITCHBOARD_MEMORY_GRPC_PORT": str(MEMORY_PORT),
                "SWITCHBOARD_MEMORY_MONGO_URL": MONGO,
                "SWITCHBOARD_MEMORY_DATABASE": plat.database,
                "SWITCHBOARD_MEMORY_CONSUMER_GROUP": f"e2e-{run_id}-memory",
                "SWITCHBOARD_HEALTH_PORT": str(HEALTH_PORTS["memory"]),
            },
            f"http://127.0.0.1:{HEALTH_PORTS['memory']}/readyz",
        ),
        (
            "llm-worker",
            "switchboard.llm_worker",
            {
                "SWITCHBOARD_LLM_WORKER_TIERS": "cheap,frontier",
                "SWITCHBOARD_LLM_WORKER_CONSUMER_GROUP_PREFIX": f"e2e-{run_id}-llm-worker",
                "SWITCHBOARD_HEALTH_PORT": str(HEALTH_PORTS["llm-worker"]),
            },
            f"http://127.0.0.1:{HEALTH_PORTS['llm-worker']}/readyz",
        ),
        (
            "orchestrator",
            "switchboard.orchestrator",
            {
                "SWITCHBOARD_ORCHESTRATOR_MEMORY_TARGET": f"127.0.0.1:{MEMORY_PORT}",
                "SWITCHBOARD_ORCHESTRATOR_CONSUMER_GROUP": f"e2e-{run_id}-orchestrator",
                "SWITCHBOARD_HEALTH_PORT": str(HEALTH_PORTS["orchestrator"]),
            },
            f"http://127.0.0.1:{HEALTH_PORTS['orchestrator']}/readyz",
        ),
        (
            "gateway",
            "switchboard.gateway",
            {
                "SWITCHBOARD_GATEWAY_GRPC_PORT": str(GATEWAY_PORT),
                "SWITCHBOARD_GATEWAY_INSTANCE_ID": f"e2e-{run_id}",
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
        asyncio.run(_drop_database(plat.database))


async def _seed_tenants(database: str) -> None:
    """The tenants the gateway authenticates: `demo` (API_KEY) and OTHER_TENANT."""
    await seed_tenants(
        database,
        TenantConfig(
            tenant_id="demo",
            name="Demo Retail",
            api_key_sha256=[hash_api_key(API_KEY)],
            rate_limits=E2E_RATE_LIMITS,
        ),
        TenantConfig(
            tenant_id=OTHER_TENANT,
            name="Other Corp",
            api_key_sha256=[hash_api_key(OTHER_API_KEY)],
            rate_limits=E2E_RATE_LIMITS,
        ),
    )


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


async def _drop_database(name: str) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        MONGO, serverSelectionTimeoutMS=5_000
    )
    try:
        await client.drop_database(name)
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
