"""`make chaos`: repeated faults under concurrent slow streams, on a stack of its own.

Everything runs privately (never the shared stack other runs use): a single-node Kafka, a
FerretDB and a Redis on free ports, the provider simulator, and memory, two llm-workers
(both tiers each), the orchestrator and the gateway on them. Each round sends concurrent
conversations of slow streams (both tiers) and, once streams are in flight, does one fault,
in turn: SIGKILL of the Kafka broker then a restart, SIGKILL of a worker (restarted), SIGKILL
of the orchestrator (restarted), a consumer-group rebalance (a third worker added, then
removed), FerretDB stopped for 20 s. Each round is accounted with `faults_support.account`:
accepted, completed, clear errors, lost, duplicated, stored-text mismatches; the run fails
(exit 1) unless lost, duplicated and mismatched are 0 in every round.

Binaries: `SWITCHBOARD_FERRETDB_BIN` and `SWITCHBOARD_KAFKA_LIBS`, else the repository's
`.local` (installed by `make up`); `redis-server` on the PATH.

    python -m tests.e2e.chaos --rounds 10
"""

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from switchboard.common.tenants import RateLimits, TenantConfig, TenantStore, hash_api_key
from switchboard.v1.chat_pb2 import ChatOptions

from .conftest import LOGS, ROOT, _create_topics
from .faults_support import FaultReport, Traffic, account
from .private_stack import PrivateFerretDB, PrivateKafka, free_port, temp_dir

FAULTS = ("kafka-kill", "worker-kill", "orchestrator-kill", "rebalance", "ferretdb-20s")
API_KEY = "chaos-api-key"
TENANT = "demo"
DATABASE = "chaos"
PREFIX = "chaos."
READY_TIMEOUT_S = 90.0
FERRETDB_DOWN_S = 20.0
KAFKA_DOWN_S = 5.0


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class Stack:
    """The private servers and services of one chaos run."""

    def __init__(self, home: Path) -> None:
        self.home = home
        LOGS.mkdir(parents=True, exist_ok=True)
        self.kafka = PrivateKafka(home, LOGS / "chaos-kafka.log")
        (home / "ferretdb").mkdir()
        self.ferretdb = PrivateFerretDB(home / "ferretdb", LOGS / "chaos-ferretdb.log")
        self.redis_port = free_port()
        self.redis: subprocess.Popen[bytes] | None = None
        self.sim_port = free_port()
        self.gateway_port = free_port()
        self.memory_port = free_port()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.health: dict[str, int] = {}

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap,
            "SWITCHBOARD_KAFKA_TOPIC_PREFIX": PREFIX,
            "SWITCHBOARD_KAFKA_SESSION_TIMEOUT_MS": "6000",
            "SWITCHBOARD_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
            "SWITCHBOARD_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "SWITCHBOARD_TELEMETRY_LOG_LEVEL": "INFO",
            "SWITCHBOARD_TELEMETRY_EXPORTER": "none",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{self.sim_port}/v1",
            "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{self.sim_port}",
        }
        for secret in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
            env.pop(secret, None)
        return env

    def service_env(self, name: str) -> tuple[str, dict[str, str]]:
        mongo = self.ferretdb.url
        if name.startswith("llm-worker"):
            return "switchboard.llm_worker", {
                "SWITCHBOARD_LLM_WORKER_TIERS": "cheap,frontier",
                "SWITCHBOARD_LLM_WORKER_CONSUMER_GROUP_PREFIX": "chaos-llm-worker",
                "SWITCHBOARD_LLM_WORKER_INSTANCE_ID": name,
            }
        return {
            "simulator": (
                "switchboard.simulator",
                {
                    "SWITCHBOARD_SIM_PORT": str(self.sim_port),
                    "SWITCHBOARD_SIM_TTFT_MS": "0",
                    "SWITCHBOARD_SIM_TOKEN_DELAY_MS": "1",
                },
            ),
            "memory": (
                "switchboard.memory",
                {
                    "SWITCHBOARD_MEMORY_GRPC_PORT": str(self.memory_port),
                    "SWITCHBOARD_MEMORY_MONGO_URL": mongo,
                    "SWITCHBOARD_MEMORY_DATABASE": DATABASE,
                    "SWITCHBOARD_MEMORY_CONSUMER_GROUP": "chaos-memory",
                },
            ),
            "orchestrator": (
                "switchboard.orchestrator",
                {
                    "SWITCHBOARD_ORCHESTRATOR_MEMORY_TARGET": f"127.0.0.1:{self.memory_port}",
                    "SWITCHBOARD_ORCHESTRATOR_KNOWLEDGE_ENABLED": "false",  # none runs here
                    "SWITCHBOARD_ORCHESTRATOR_CONSUMER_GROUP": "chaos-orchestrator",
                    "SWITCHBOARD_ORCHESTRATOR_MONGO_URL": mongo,
                    "SWITCHBOARD_ORCHESTRATOR_DATABASE": DATABASE,
                },
            ),
            "gateway": (
                "switchboard.gateway",
                {
                    "SWITCHBOARD_GATEWAY_GRPC_PORT": str(self.gateway_port),
                    "SWITCHBOARD_GATEWAY_HTTP_PORT": "0",  # a free one: not tested here
                    "SWITCHBOARD_GATEWAY_INSTANCE_ID": "chaos",
                    "SWITCHBOARD_GATEWAY_MEMORY_TARGET": f"127.0.0.1:{self.memory_port}",
                    "SWITCHBOARD_MONGO_URL": mongo,
                    "SWITCHBOARD_MONGO_DATABASE": DATABASE,
                },
            ),
        }[name]

    def start_service(self, name: str) -> None:
        module, env = self.service_env(name)
        port = self.health.setdefault(name, free_port())
        health = {"SWITCHBOARD_HEALTH_PORT": str(port)}
        if name == "simulator":
            health = {}
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", module],
            env={**self.env(), **env, **health},
            stdout=(LOGS / f"chaos-{name}.log").open("ab"),
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    async def wait_ready(self, name: str) -> None:
        url = (
            f"http://127.0.0.1:{self.sim_port}/_health"
            if name == "simulator"
            else f"http://127.0.0.1:{self.health[name]}/readyz"
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not await asyncio.to_thread(_ready, url):
            process = self.processes[name]
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited; see {LOGS / f'chaos-{name}.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready within {READY_TIMEOUT_S:g}s")
            await asyncio.sleep(0.2)

    async def restart(self, name: str) -> None:
        self.start_service(name)
        await self.wait_ready(name)

    def kill(self, name: str) -> None:
        process = self.processes[name]
        process.kill()
        process.wait(timeout=10)

    def terminate(self, name: str) -> None:
        process = self.processes.pop(name)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    async def start(self) -> None:
        redis_bin = shutil.which("redis-server")
        if redis_bin is None:
            raise RuntimeError("redis-server is not on the PATH")
        self.redis = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
            [redis_bin, "--port", str(self.redis_port), "--save", "", "--appendonly", "no"],
            stdout=(LOGS / "chaos-redis.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        self.ferretdb.start()
        await self.kafka.start()
        await _create_topics(PREFIX, self.kafka.bootstrap)
        await self.seed()
        names = ["simulator", "memory", "llm-worker-1", "llm-worker-2", "orchestrator", "gateway"]
        for name in names:
            self.start_service(name)
        for name in names:
            await self.wait_ready(name)

    async def seed(self) -> None:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            self.ferretdb.url, serverSelectionTimeoutMS=10_000
        )
        try:
            await TenantStore(client, DATABASE).upsert(
                TenantConfig(
                    tenant_id=TENANT,
                    name="Chaos Retail",
                    api_key_sha256=[hash_api_key(API_KEY)],
                    rate_limits=RateLimits(
                        requests_per_minute=100_000, requests_per_minute_per_user=100_000
                    ),
                    builtin_tools=[],
                )
            )
        finally:
            await client.close()

    async def stop(self) -> None:
        for name in reversed(list(self.processes)):
            self.processes[name].send_signal(signal.SIGTERM)
        for name in list(self.processes):
            try:
                self.processes[name].wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.processes[name].kill()
        await self.kafka.stop()
        self.ferretdb.stop()
        if self.redis is not None:
            self.redis.terminate()
            self.redis.wait(timeout=10)


def slow(conversation: int, turn: int) -> ChatOptions:
    """About 3 s a reply; conversations alternate tiers so both worker groups are busy."""
    tier = "cheap" if conversation % 2 == 0 else "frontier"
    return ChatOptions(tier=tier, metadata={"sim.delay_ms": "50", "sim.tokens": "60"})


def fault_of(stack: Stack, kind: str) -> Callable[[Traffic], Awaitable[None]]:
    """The round's fault, done once streams are in flight."""

    async def in_flight(traffic: Traffic) -> None:
        await traffic.until(
            lambda t: sum(r.completed for r in t.records) >= 4 and len(t.in_flight()) >= 3,
            timeout_s=120,
        )

    async def fault(traffic: Traffic) -> None:
        await in_flight(traffic)
        if kind == "kafka-kill":
            await asyncio.to_thread(stack.kafka.kill)
            await asyncio.sleep(KAFKA_DOWN_S)
            await stack.kafka.start()
        elif kind == "worker-kill":
            await asyncio.to_thread(stack.kill, "llm-worker-1")
            await asyncio.sleep(2)
            await stack.restart("llm-worker-1")
        elif kind == "orchestrator-kill":
            await asyncio.to_thread(stack.kill, "orchestrator")
            await asyncio.sleep(2)
            await stack.restart("orchestrator")
        elif kind == "rebalance":
            await stack.restart("llm-worker-3")
            await in_flight(traffic)
            await asyncio.to_thread(stack.terminate, "llm-worker-3")
        elif kind == "ferretdb-20s":
            await asyncio.to_thread(stack.ferretdb.stop)
            await asyncio.sleep(FERRETDB_DOWN_S)
            await asyncio.to_thread(stack.ferretdb.start)
        else:
            raise ValueError(kind)

    return fault


async def run_round(stack: Stack, kind: str, conversations: int) -> FaultReport:
    traffic = Traffic(
        f"127.0.0.1:{stack.gateway_port}",
        API_KEY,
        conversations=conversations,
        min_turns=3,
        max_turns=6,
        options_for=slow,
        deadline_s=120,
        budget_s=180,
        refusal_retries=10,
        refusal_backoff_s=2.0,
    )
    await traffic.run(fault_of(stack, kind))
    client: AsyncMongoClient[Any] = AsyncMongoClient(
        stack.ferretdb.url, serverSelectionTimeoutMS=10_000
    )
    try:
        return await account(kind, traffic, client, DATABASE, tenant_id=TENANT, store_wait_s=120)
    finally:
        await client.close()


def table(rows: list[tuple[int, FaultReport]]) -> str:
    head = (
        "| round | fault | accepted | completed | clear errors | lost | duplicated | mismatched |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for number, r in rows:
        lines.append(
            f"| {number} | {r.fault} | {r.accepted} | {r.completed} | {r.clear_errors} | "
            f"{r.lost} | {r.duplicated} | {r.mismatched} |"
        )
    return "\n".join(lines)


def verdict(rows: list[tuple[int, FaultReport]]) -> bool:
    """Whether every round lost, duplicated and mismatched nothing."""
    return all(r.lost == 0 and r.duplicated == 0 and r.mismatched == 0 for _, r in rows)


async def main(rounds: int, conversations: int, report: Path | None) -> int:
    rows: list[tuple[int, FaultReport]] = []
    with temp_dir("switchboard-chaos-") as home:
        stack = Stack(home)
        try:
            await stack.start()
            for number in range(1, rounds + 1):
                kind = FAULTS[(number - 1) % len(FAULTS)]
                result = await run_round(stack, kind, conversations)
                rows.append((number, result))
                print(f"round {number} {kind}: {result.line()}", flush=True)
                for problem in result.problems:
                    print(f"  {problem}", flush=True)
        finally:
            await stack.stop()
    print(table(rows))
    if report is not None:
        await asyncio.to_thread(
            report.write_text, json.dumps([r.as_dict() for _, r in rows], indent=2)
        )
    return 0 if rows and verdict(rows) else 1


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.chaos")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--report", type=Path, default=None, help="write the rounds as JSON")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.rounds, args.conversations, args.report)))


if __name__ == "__main__":
    cli()
