"""A second, slow lane of the platform for the gateway's end-to-end tests.

Some behaviours need a generation that is still running when the test acts: a retry that
attaches, a second message on a busy conversation, a cancellation, a deadline, a drain on
shutdown. This lane has its own topic prefix and a simulator whose replies take seconds
(`SLOW_TOKENS` tokens, `SLOW_TOKEN_DELAY_MS` apart), an orchestrator and a worker of the cheap
tier, and two gateway replicas (plus one whose Redis is unreachable). It shares the main
platform's memory service and tenant database.
"""

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .conftest import (
    KAFKA,
    LOGS,
    MEMORY_PORT,
    MONGO,
    REDIS,
    ROOT,
    Platform,
    _create_topics,
    _delete_topics,
    _wait_ready,
)
from .private_stack import free_port

SLOW_TOKENS = 80
SLOW_TOKEN_DELAY_MS = 50  # a full reply takes about 4 s


DISCONNECT_GRACE_S = 3
# Fast heartbeats and sweeps, so that sweeping is observable within seconds.
REPLICA_SETTINGS = {
    "SWITCHBOARD_GATEWAY_HEARTBEAT_INTERVAL_S": "0.5",
    "SWITCHBOARD_GATEWAY_HEARTBEAT_TTL_S": "2",
    "SWITCHBOARD_GATEWAY_REPLY_TOPIC_SWEEP_INTERVAL_S": "1",
    "SWITCHBOARD_GATEWAY_ABANDONED_REPLY_TOPIC_GRACE_S": "2",
}


@dataclass
class Lane:
    """The slow lane's addresses and names."""

    platform: Platform
    topic_prefix: str
    env: dict[str, str]
    # gRPC ports of the replicas "a", "b" and "broken"; chosen at start.
    grpc_ports: dict[str, int]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def topic(self, name: str) -> str:
        return self.topic_prefix + name

    def target(self, gateway: str) -> str:
        return f"127.0.0.1:{self.grpc_ports[gateway]}"

    def instance_id(self, gateway: str) -> str:
        return f"e2e-{self.platform.run_id}-slow-{gateway}"

    def reply_topic(self, gateway: str) -> str:
        return self.topic(f"chat.replies.{self.instance_id(gateway)}")

    def gateway_env(self, gateway: str, grpc_port: int, health_port: int) -> dict[str, str]:
        """The environment of one gateway replica of this lane."""
        return {
            **self.env,
            **REPLICA_SETTINGS,
            "SWITCHBOARD_GATEWAY_GRPC_PORT": str(grpc_port),
            "SWITCHBOARD_GATEWAY_HTTP_PORT": "0",  # a free one: the HTTP door is not tested here
            "SWITCHBOARD_GATEWAY_INSTANCE_ID": self.instance_id(gateway),
            "SWITCHBOARD_MONGO_URL": MONGO,
            "SWITCHBOARD_MONGO_DATABASE": self.platform.database,
            # The platform's memory: asked whether a conversation exists on a marker miss.
            "SWITCHBOARD_GATEWAY_MEMORY_TARGET": f"127.0.0.1:{MEMORY_PORT}",
            "SWITCHBOARD_HEALTH_PORT": str(health_port),
        }


def start_process(name: str, module: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A service process logging to .local/logs/e2e/<name>.log."""
    log = LOGS / f"{name}.log"
    return subprocess.Popen(
        [sys.executable, "-m", module],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )


def wait_ready(name: str, port: int, process: subprocess.Popen[bytes]) -> None:
    """Until the process's readiness endpoint answers 200 (bounded)."""
    path = "_health" if name.endswith("simulator") else "readyz"
    _wait_ready(name, f"http://127.0.0.1:{port}/{path}", process, LOGS / f"{name}.log")


def stop_processes(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    """SIGTERM, then SIGKILL after 15 s."""
    for process in reversed(processes.values()):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes.values():
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_lane(platform: Platform) -> Iterator[Lane]:
    """Start the lane; stop it and delete its topics at the end."""
    prefix = f"e2e-{platform.run_id}-slow."
    asyncio.run(_create_topics(prefix))
    sim_port = free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    env = {
        **os.environ,
        "SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS": KAFKA,
        "SWITCHBOARD_KAFKA_TOPIC_PREFIX": prefix,
        "SWITCHBOARD_REDIS_URL": REDIS,
        "SWITCHBOARD_TELEMETRY_LOG_LEVEL": "INFO",
        "OPENAI_BASE_URL": f"{sim_url}/v1",
        "ANTHROPIC_BASE_URL": sim_url,
    }
    for secret in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        env.pop(secret, None)
    lane = Lane(platform, prefix, env, {name: free_port() for name in ("a", "b", "broken")})
    run = f"e2e-{platform.run_id}-slow"
    specs: list[tuple[str, str, dict[str, str], int]] = [
        (
            "slow-simulator",
            "switchboard.simulator",
            {
                **env,
                "SWITCHBOARD_SIM_PORT": str(sim_port),
                "SWITCHBOARD_SIM_TTFT_MS": "0",
                "SWITCHBOARD_SIM_TOKEN_DELAY_MS": str(SLOW_TOKEN_DELAY_MS),
                "SWITCHBOARD_SIM_REPLY_TOKENS": str(SLOW_TOKENS),
            },
            sim_port,
        ),
    ]
    port = free_port()
    specs.append(
        (
            "slow-llm-worker",
            "switchboard.llm_worker",
            {
                **env,
                "SWITCHBOARD_LLM_WORKER_TIERS": "cheap",
                "SWITCHBOARD_LLM_WORKER_CONSUMER_GROUP_PREFIX": f"{run}-llm-worker",
                "SWITCHBOARD_HEALTH_PORT": str(port),
            },
            port,
        )
    )
    port = free_port()
    specs.append(
        (
            "slow-orchestrator",
            "switchboard.orchestrator",
            {
                **env,
                "SWITCHBOARD_ORCHESTRATOR_MEMORY_TARGET": f"127.0.0.1:{MEMORY_PORT}",
                "SWITCHBOARD_ORCHESTRATOR_KNOWLEDGE_ENABLED": "false",  # none runs here
                "SWITCHBOARD_ORCHESTRATOR_CONSUMER_GROUP": f"{run}-orchestrator",
                "SWITCHBOARD_HEALTH_PORT": str(port),
            },
            port,
        )
    )
    for gateway in ("a", "b", "broken"):
        port = free_port()
        gateway_env = lane.gateway_env(gateway, lane.grpc_ports[gateway], port)
        if gateway == "b":
            # Replica b lets a retry resume a reply whose caller disconnected.
            gateway_env["SWITCHBOARD_GATEWAY_DISCONNECT_GRACE_S"] = str(DISCONNECT_GRACE_S)
        if gateway == "broken":
            # Nothing listens on port 1: every Redis call fails at once.
            gateway_env["SWITCHBOARD_REDIS_URL"] = "redis://127.0.0.1:1/0"
        specs.append((f"slow-gateway-{gateway}", "switchboard.gateway", gateway_env, port))
    try:
        for name, module, process_env, _ in specs:
            lane.processes[name] = start_process(name, module, process_env)
        for name, _, _, port in specs:
            wait_ready(name, port, lane.processes[name])
        yield lane
    finally:
        stop_processes(lane.processes)
        asyncio.run(_delete_topics(prefix))


def log_of(name: str) -> Path:
    """The log file of a lane process."""
    return LOGS / f"{name}.log"
