"""Private servers and a private platform for tests that break them.

The shared Kafka and FerretDB serve every other test (and the lead's benchmarks), so a test
that stops one runs its own: a FerretDB on its own port and SQLite directory, a single-node
KRaft Kafka broker on its own ports and data directory, and a platform (memory, llm-worker,
orchestrator, gateway) pointed at them. The provider simulator of the main test platform is
shared (it is plain HTTP), and so are Redis and the main platform's tenants.

Binaries: `<repo>/.local/bin/ferretdb` and the Kafka jars in `<repo>/.local/kafka/libs`
(installed by `deploy/local/stack.sh`), or `SWITCHBOARD_FERRETDB_BIN` and
`SWITCHBOARD_KAFKA_LIBS` (e.g. in a git worktree without its own `.local`).
"""

import asyncio
import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from pymongo import AsyncMongoClient

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

FERRETDB_BIN = Path(os.environ.get("SWITCHBOARD_FERRETDB_BIN", ROOT / ".local/bin/ferretdb"))
KAFKA_LIBS = Path(os.environ.get("SWITCHBOARD_KAFKA_LIBS", ROOT / ".local/kafka/libs"))
JAVA = f"{os.environ['JAVA_HOME']}/bin/java" if os.environ.get("JAVA_HOME") else "java"
START_TIMEOUT_S = 15.0
KAFKA_START_TIMEOUT_S = float(os.environ.get("SWITCHBOARD_E2E_KAFKA_START_TIMEOUT_S", "60"))
STOP_TIMEOUT_S = 30.0
# Memory's bounds on its store, short so that an outage shows within seconds.
SHORT_MONGO_BOUNDS = {
    "SWITCHBOARD_MEMORY_MONGO_TIMEOUT_MS": "500",
    "SWITCHBOARD_MEMORY_WRITE_ATTEMPTS": "3",
    "SWITCHBOARD_MEMORY_WRITE_BACKOFF_MAX_S": "0.5",
    "SWITCHBOARD_MEMORY_CONTEXT_READ_TIMEOUT_S": "0.5",
}


def free_port() -> int:
    """A port free right now (ports fixed in the ephemeral range can be taken by any client)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _stop(process: subprocess.Popen[bytes] | None, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, then SIGKILL if it does not exit within `timeout_s`."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class PrivateFerretDB:
    """A FerretDB of one test module alone, which it may stop and start at will."""

    def __init__(self, data_dir: Path, log: Path) -> None:
        if not FERRETDB_BIN.is_file():
            pytest.fail(
                f"no FerretDB binary at {FERRETDB_BIN}: run deploy/local/stack.sh up, "
                "or point SWITCHBOARD_FERRETDB_BIN at one"
            )
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
        _stop(self._process, timeout_s=10)


def _kafka_cluster_id() -> str:
    """What `kafka.tools.StorageTool random-uuid` prints (base64url of 16 random bytes),
    without starting a JVM for it; like Kafka's, never starting with '-' (an option)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class PrivateKafka:
    """A single-node KRaft broker of one test module alone, configured like the local stack's
    (deploy/local/kafka/server.properties.template): it may be stopped and started again on
    the same ports and data directory, as a broker restart in production would."""

    def __init__(self, home: Path, log: Path) -> None:
        if not (KAFKA_LIBS.is_dir() and any(KAFKA_LIBS.glob("kafka_*.jar"))):
            pytest.fail(
                f"no Kafka jars in {KAFKA_LIBS}: run deploy/local/stack.sh up, "
                "or point SWITCHBOARD_KAFKA_LIBS at them"
            )
        self.port = free_port()
        self.controller_port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._log = log
        self._config = home / "server.properties"
        template = (ROOT / "deploy/local/kafka/server.properties.template").read_text()
        self._config.write_text(
            template.replace("@KAFKA_PORT@", str(self.port))
            .replace("@CONTROLLER_PORT@", str(self.controller_port))
            .replace("@LOG_DIR@", str(home / "data"))
        )
        self._process: subprocess.Popen[bytes] | None = None
        self._java(
            "kafka.tools.StorageTool", "format", "-t", _kafka_cluster_id(), "-c", str(self._config)
        )

    def _command(self, *args: str) -> list[str]:
        return [
            JAVA,
            "-Xms128m",
            "-Xmx512m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            f"-Dlog4j2.configurationFile={ROOT / 'deploy/local/kafka/log4j2.properties'}",
            "-cp",
            f"{KAFKA_LIBS}/*",
            *args,
        ]

    def _java(self, *args: str) -> None:
        with self._log.open("ab") as log:
            done = subprocess.run(
                self._command(*args),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=120,
                check=False,
            )
        if done.returncode != 0:
            pytest.fail(f"{' '.join(args[:2])} failed:\n{self._log.read_text()[-3000:]}")

    async def start(self) -> None:
        """Start the broker; ready once a real admin call (listing topics) answers."""
        self._process = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
            self._command("kafka.Kafka", str(self._config)),
            stdout=self._log.open("ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + KAFKA_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                pytest.fail(f"private Kafka exited:\n{self._log.read_text()[-3000:]}")
            if await self._answers():
                return
            await asyncio.sleep(0.2)
        pytest.fail(f"private Kafka not ready within {KAFKA_START_TIMEOUT_S}s")

    async def _answers(self) -> bool:
        try:  # no admin client (and its connection-error logs) before the port is open
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                pass
        except OSError:
            return False
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3_000)
        try:
            await asyncio.wait_for(admin.start(), 5)
            await asyncio.wait_for(admin.list_topics(), 5)
            return True
        except Exception:  # not up yet: connection refused, timeout, no controller yet
            return False
        finally:
            await admin.close()

    async def stop(self) -> None:
        """A clean stop (SIGTERM: controlled shutdown), bounded; SIGKILL past the bound."""
        await asyncio.to_thread(_stop, self._process)

    def kill(self) -> None:
        """SIGKILL, as a crashed broker: no controlled shutdown, nothing flushed."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)


@dataclass
class PrivatePlatform:
    """Addresses and names of a private platform (see `private_platform`)."""

    name: str
    kafka: str
    prefix: str
    mongo_url: str  # memory's store
    database: str  # memory's database
    gateway_target: str
    memory_target: str
    memory_group: str
    simulator_url: str
    api_key: str
    tenant_database: str  # where the gateway and orchestrator read tenants
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)


@contextmanager
def private_platform(
    platform: Platform,
    name: str,
    *,
    kafka: str = KAFKA,
    mongo_url: str = MONGO,
    memory_env: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[PrivatePlatform]:
    """Memory, a cheap-tier llm-worker, orchestrator and gateway on a topic prefix and consumer
    groups of their own, on `kafka`; memory stores in `mongo_url`. Tenants (and the API key)
    come from the main platform's database on the shared FerretDB, so a private store may go
    down without locking clients out. Logs: `.local/logs/e2e/<name>-<service>.log`."""
    run_id = uuid.uuid4().hex[:8]
    LOGS.mkdir(parents=True, exist_ok=True)
    ports = {service: free_port() for service in ("gateway", "memory")}
    health = {s: free_port() for s in ("gateway", "memory", "orchestrator", "llm-worker")}
    plat = PrivatePlatform(
        name=name,
        kafka=kafka,
        prefix=f"e2e-{run_id}-{name}.",
        mongo_url=mongo_url,
        database=f"{name}_{run_id}".replace("-", "_"),
        gateway_target=f"127.0.0.1:{ports['gateway']}",
        memory_target=f"127.0.0.1:{ports['memory']}",
        memory_group=f"e2e-{run_id}-{name}-memory",
        simulator_url=platform.simulator_url,
        api_key=platform.api_key,
        tenant_database=platform.database,
    )
    base_env = {
        **os.environ,
        "SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS": kafka,
        "SWITCHBOARD_KAFKA_TOPIC_PREFIX": plat.prefix,
        "SWITCHBOARD_REDIS_URL": REDIS,
        "SWITCHBOARD_TELEMETRY_LOG_LEVEL": "INFO",
        "SWITCHBOARD_TELEMETRY_EXPORTER": "none",
        "OPENAI_BASE_URL": f"{platform.simulator_url}/v1",
        "ANTHROPIC_BASE_URL": platform.simulator_url,
        **(env or {}),
    }
    for secret in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        base_env.pop(secret, None)
    services = [
        (
            "memory",
            "switchboard.memory",
            {
                "SWITCHBOARD_MEMORY_GRPC_PORT": str(ports["memory"]),
                "SWITCHBOARD_MEMORY_MONGO_URL": mongo_url,
                "SWITCHBOARD_MEMORY_DATABASE": plat.database,
                "SWITCHBOARD_MEMORY_CONSUMER_GROUP": plat.memory_group,
                **(memory_env or {}),
            },
        ),
        (
            "llm-worker",
            "switchboard.llm_worker",
            {
                "SWITCHBOARD_LLM_WORKER_TIERS": "cheap",
                "SWITCHBOARD_LLM_WORKER_CONSUMER_GROUP_PREFIX": f"e2e-{run_id}-{name}-worker",
            },
        ),
        (
            "orchestrator",
            "switchboard.orchestrator",
            {
                "SWITCHBOARD_ORCHESTRATOR_MEMORY_TARGET": plat.memory_target,
                # No knowledge service runs here: without this the orchestrator would reach
                # the default address, the one of a `make up` stack on this machine.
                "SWITCHBOARD_ORCHESTRATOR_KNOWLEDGE_ENABLED": "false",
                "SWITCHBOARD_ORCHESTRATOR_CONSUMER_GROUP": f"e2e-{run_id}-{name}-orchestrator",
                "SWITCHBOARD_ORCHESTRATOR_MONGO_URL": MONGO,
                "SWITCHBOARD_ORCHESTRATOR_DATABASE": platform.database,
            },
        ),
        (
            "gateway",
            "switchboard.gateway",
            {
                "SWITCHBOARD_GATEWAY_GRPC_PORT": str(ports["gateway"]),
                "SWITCHBOARD_GATEWAY_HTTP_PORT": "0",  # a free one: not tested here
                "SWITCHBOARD_GATEWAY_INSTANCE_ID": f"e2e-{run_id}-{name}",
                "SWITCHBOARD_GATEWAY_MEMORY_TARGET": plat.memory_target,
                "SWITCHBOARD_MONGO_URL": MONGO,
                "SWITCHBOARD_MONGO_DATABASE": platform.database,
            },
        ),
    ]
    try:
        asyncio.run(_create_topics(plat.prefix, kafka))
        for service, module, service_env in services:
            log = LOGS / f"{name}-{service}.log"
            plat.processes[service] = subprocess.Popen(
                [sys.executable, "-m", module],
                env={**base_env, **service_env, "SWITCHBOARD_HEALTH_PORT": str(health[service])},
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        for service, _, _ in services:
            _wait_ready(
                service,
                f"http://127.0.0.1:{health[service]}/readyz",
                plat.processes[service],
                LOGS / f"{name}-{service}.log",
            )
        yield plat
    finally:
        for process in reversed(plat.processes.values()):
            process.send_signal(signal.SIGTERM)
        for process in plat.processes.values():
            _stop(process, timeout_s=15)
        # A private broker may be gone already; its data directory goes with it.
        with contextlib.suppress(Exception):
            asyncio.run(_delete_topics(plat.prefix, kafka))
        if mongo_url == MONGO:
            asyncio.run(_drop_database(mongo_url, plat.database))


async def _drop_database(url: str, name: str) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        url, serverSelectionTimeoutMS=5_000
    )
    try:
        await client.drop_database(name)
    finally:
        await client.close()


@contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory, removed at the end."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
