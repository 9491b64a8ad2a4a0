"""Starts the simulator and the four services as separate processes, on chosen ports, with
their own topic prefix, consumer groups and database, and stops them again.

Used by the benchmark; the same isolation lets it run beside `make up`.
"""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pymongo import AsyncMongoClient

from switchboard.bench.tracehook import TRACE_DIR_ENV, TRACE_NAME_ENV
from switchboard.common.tenants import RateLimits, TenantConfig, TenantStore, hash_api_key
from switchboard.common.topics import read_topic_specs

ROOT = Path(__file__).resolve().parents[5]
INFRASTRUCTURE = ("kafka", "ferretdb", "redis", "jaeger")


@dataclass(frozen=True)
class Ports:
    """Where each process listens."""

    simulator: int = 28400
    gateway: int = 29261
    gateway_http: int = 29263
    memory: int = 29262
    gateway_health: int = 28181
    orchestrator_health: int = 28182
    memory_health: int = 28183
    worker_health: int = 28190
    litellm: int = 28410

    def shifted(self, offset: int) -> "Ports":
        """The same layout moved by `offset`, so that two runs can share the machine."""
        return Ports(**{name: port + offset for name, port in vars(self).items()})


@dataclass
class Platform:
    """A running isolated platform."""

    run_id: str
    ports: Ports
    kafka: str
    mongo_url: str
    api_key: str
    simulator_env: dict[str, str]
    log_dir: Path
    workers_per_tier: int = 1
    ready_timeout_s: float = 60.0
    worker_max_concurrency: int = 64
    """Generations at once per worker: the paced phase holds hundreds of slow replies open."""
    trace_dir: Path | None = None
    """When set, the services run under tracemalloc (bench.tracehook; snapshots go here)."""
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def topic_prefix(self) -> str:
        return f"bench-{self.run_id}."

    @property
    def database(self) -> str:
        return f"bench_{self.run_id}"

    @property
    def gateway_target(self) -> str:
        return f"127.0.0.1:{self.ports.gateway}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.gateway_http}"

    @property
    def simulator_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.simulator}"

    def pids(self) -> dict[str, int]:
        """Process ids by service name."""
        return {name: process.pid for name, process in self.processes.items()}

    def infrastructure_pids(self, run_dir: Path | None = None) -> dict[str, int]:
        """The local stack's servers this platform shares (from `deploy/local/stack.sh`'s pid
        files in `run_dir`, this checkout's by default), by name; those that are not running
        locally are left out."""
        run_dir = run_dir or ROOT / ".local" / "run"
        found = {}
        for name in INFRASTRUCTURE:
            try:
                pid = int((run_dir / f"{name}.pid").read_text().strip())
                os.kill(pid, 0)
            except (OSError, ValueError):
                continue
            found[name] = pid
        return found

    def start(self) -> None:
        """Create the topics, start every process and wait until each is ready."""
        self._check_ports_free()
        asyncio.run(self._create_topics())
        asyncio.run(self._seed_tenant())
        self.log_dir.mkdir(parents=True, exist_ok=True)
        p = self.ports
        base = {
            **os.environ,
            "SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS": self.kafka,
            "SWITCHBOARD_KAFKA_TOPIC_PREFIX": self.topic_prefix,
            "SWITCHBOARD_MONGO_URL": self.mongo_url,
            "SWITCHBOARD_MONGO_DATABASE": self.database,
            "OPENAI_BASE_URL": f"{self.simulator_url}/v1",
            "ANTHROPIC_BASE_URL": self.simulator_url,
            "SWITCHBOARD_TELEMETRY_LOG_LEVEL": "WARNING",
        }
        for secret in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
            base.pop(secret, None)
        specs: list[tuple[str, str, dict[str, str], str]] = [
            (
                "simulator",
                "switchboard.simulator",
                {"SWITCHBOARD_SIM_PORT": str(p.simulator), **self.simulator_env},
                f"{self.simulator_url}/_health",
            ),
            (
                "memory",
                "switchboard.memory",
                {
                    "SWITCHBOARD_MEMORY_GRPC_PORT": str(p.memory),
                    "SWITCHBOARD_MEMORY_MONGO_URL": self.mongo_url,
                    "SWITCHBOARD_MEMORY_DATABASE": self.database,
                    "SWITCHBOARD_MEMORY_CONSUMER_GROUP": f"bench-{self.run_id}-memory",
                    "SWITCHBOARD_HEALTH_PORT": str(p.memory_health),
                },
                f"http://127.0.0.1:{p.memory_health}/readyz",
            ),
        ]
        for tier_index, tier in enumerate(("cheap", "frontier")):
            for i in range(self.workers_per_tier):
                port = p.worker_health + tier_index * self.workers_per_tier + i
                specs.append(
                    (
                        f"llm-worker-{tier}-{i}",
                        "switchboard.llm_worker",
                        {
                            "SWITCHBOARD_LLM_WORKER_TIERS": tier,
                            "SWITCHBOARD_LLM_WORKER_CONSUMER_GROUP_PREFIX": (
                                f"bench-{self.run_id}-llm-worker"
                            ),
                            "SWITCHBOARD_HEALTH_PORT": str(port),
                            "SWITCHBOARD_LLM_WORKER_MAX_CONCURRENCY": str(
                                self.worker_max_concurrency
                            ),
                        },
                        f"http://127.0.0.1:{port}/readyz",
                    )
                )
        specs += [
            (
                "orchestrator",
                "switchboard.orchestrator",
                {
                    "SWITCHBOARD_ORCHESTRATOR_MEMORY_TARGET": f"127.0.0.1:{p.memory}",
                    "SWITCHBOARD_ORCHESTRATOR_CONSUMER_GROUP": f"bench-{self.run_id}-orchestrator",
                    "SWITCHBOARD_ORCHESTRATOR_MONGO_URL": self.mongo_url,
                    "SWITCHBOARD_ORCHESTRATOR_DATABASE": self.database,
                    "SWITCHBOARD_HEALTH_PORT": str(p.orchestrator_health),
                },
                f"http://127.0.0.1:{p.orchestrator_health}/readyz",
            ),
            (
                "gateway",
                "switchboard.gateway",
                {
                    "SWITCHBOARD_GATEWAY_GRPC_PORT": str(p.gateway),
                    "SWITCHBOARD_GATEWAY_HTTP_PORT": str(p.gateway_http),
                    "SWITCHBOARD_GATEWAY_INSTANCE_ID": f"bench-{self.run_id}",
                    "SWITCHBOARD_HEALTH_PORT": str(p.gateway_health),
                },
                f"http://127.0.0.1:{p.gateway_health}/readyz",
            ),
        ]
        for name, module, env, _ in specs:
            log = (self.log_dir / f"{name}.log").open("wb")
            command = [sys.executable, "-m", module]
            if self.trace_dir is not None and name != "simulator":
                command[2:2] = ["switchboard.bench.tracehook"]
                env = {**env, TRACE_DIR_ENV: str(self.trace_dir), TRACE_NAME_ENV: name}
            self.processes[name] = subprocess.Popen(
                command,
                env={**base, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        for name, _, _, url in specs:
            self._wait_ready(name, url)

    def stop(self) -> None:
        """Stop every process (bounded), then drop the topics and the database."""
        for process in reversed(self.processes.values()):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        try:
            asyncio.run(self._delete_topics())
        except Exception as exc:  # the processes are stopped; leftover topics only cost disk
            print(f"could not delete the run's topics ({self.topic_prefix}*): {exc}")
        # The database stays: FerretDB 1.24 (SQLite) can crash after dropping a database
        # whose WAL its pool still maps; `deploy/local/stack.sh down --purge` clears it.

    def _check_ports_free(self) -> None:
        """Fail before starting anything when a port is taken: readiness checks would
        otherwise pass against another run's processes (a second bench at the same time)."""
        for name, port in vars(self.ports).items():
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                # Connections of an earlier run in TIME_WAIT do not count; a listener does.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError as exc:
                    raise RuntimeError(
                        f"port {port} ({name}) is in use: is another benchmark running? ({exc})"
                    ) from None

    def _wait_ready(self, name: str, url: str) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        process = self.processes[name]
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}; see {self.log_dir}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{name} not ready at {url} within {self.ready_timeout_s}s")

    async def _seed_tenant(self) -> None:
        """The load's tenant: limits far above the load, no response cache (every turn takes
        the full path), default guardrails (their cost is part of the platform's)."""
        tenant = TenantConfig(
            tenant_id="bench",
            name="Benchmark",
            api_key_sha256=[hash_api_key(self.api_key)],
            rate_limits=RateLimits(
                requests_per_minute=10_000_000, requests_per_minute_per_user=10_000_000
            ),
            daily_budget_usd=1_000_000.0,
        )
        client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
            self.mongo_url, serverSelectionTimeoutMS=5_000
        )
        try:
            await TenantStore(client, self.database).upsert(tenant)
        finally:
            await client.close()

    def _topic_specs(self) -> list[tuple[str, int]]:
        return read_topic_specs(ROOT / "deploy/local/kafka/topics.txt", self.topic_prefix)

    async def _create_topics(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka, request_timeout_ms=10_000)
        await admin.start()
        try:
            await admin.create_topics(
                [
                    NewTopic(n, num_partitions=k, replication_factor=1)
                    for n, k in self._topic_specs()
                ]
            )
        finally:
            await admin.close()

    async def _delete_topics(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka, request_timeout_ms=10_000)
        await admin.start()
        try:
            mine = [t for t in await admin.list_topics() if t.startswith(self.topic_prefix)]
            if mine:
                await admin.delete_topics(mine)
        finally:
            await admin.close()
