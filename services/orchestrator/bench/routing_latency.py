"""The routing decision's time through the public API (issue 20: p99 <= 5 ms).

Starts the benchmark's isolated platform (tools/bench: simulator, memory, workers,
orchestrator, gateway on their own ports, topic prefix and database) beside the running
local stack, sends the router's held-out messages (tests/data/router_holdout.jsonl) one at a
time through the gateway's gRPC Chat with no tier (so that the router decides), then reads
the orchestrator's `switchboard_routing_seconds` histogram from its /metrics endpoint and
prints the share of decisions within 5 ms and the p50/p99 interpolated within its buckets.
Every decision is also on its trace (`switchboard.route.ms` on `orchestrator.turn`).

    .venv/bin/python services/orchestrator/bench/routing_latency.py --port-offset 100
"""

import argparse
import asyncio
import json
import os
import re
import urllib.request
import uuid
from pathlib import Path

import grpc

from switchboard.bench.platform import ROOT, Platform, Ports
from switchboard.v1.chat_pb2 import ChatOptions, ChatRequest
from switchboard.v1.chat_pb2_grpc import ChatServiceStub

_BUCKET = re.compile(r'switchboard_routing_seconds_bucket\{classifier="(\w+)",le="([^"]+)"\} (\S+)')


def messages(path: Path) -> list[str]:
    """The held-out messages (the header line has no text)."""
    out = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if "text" in record:
            out.append(str(record["text"]))
    return out


async def send_all(target: str, api_key: str, texts: list[str], timeout_s: float) -> int:
    """One turn per message, one at a time, each in a new conversation; the errors."""
    errors = 0
    metadata = (("authorization", f"Bearer {api_key}"),)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = ChatServiceStub(channel)
        for text in texts:
            request = ChatRequest(
                message=text, user_id="routing", options=ChatOptions(metadata={"sim.tokens": "5"})
            )
            try:
                async for event in stub.Chat(request, metadata=metadata, timeout=timeout_s):
                    if event.WhichOneof("event") == "error":
                        errors += 1
            except grpc.aio.AioRpcError:
                errors += 1
    return errors


def buckets(metrics_text: str) -> dict[str, list[tuple[float, float]]]:
    """Cumulative (upper bound, count) pairs per classifier."""
    found: dict[str, list[tuple[float, float]]] = {}
    for kind, le, count in _BUCKET.findall(metrics_text):
        found.setdefault(kind, []).append((float(le), float(count)))
    return {k: sorted(v) for k, v in found.items()}


def quantile(cumulative: list[tuple[float, float]], q: float) -> float:
    """The q-quantile, linear within its bucket (inf when it lies past the last bound)."""
    total = cumulative[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in cumulative:
        if count >= rank:
            if bound == float("inf"):
                return bound
            share = (rank - below) / (count - below) if count > below else 1.0
            return lower + (bound - lower) * share
        lower, below = bound, count
    return float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port-offset", type=int, default=0, help="moves every port")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the messages")
    parser.add_argument("--timeout-s", type=float, default=60.0, help="per turn")
    parser.add_argument("--ready-timeout-s", type=float, default=180.0, help="per process start")
    parser.add_argument("--data", type=Path, default=ROOT / "tests/data/router_holdout.jsonl")
    args = parser.parse_args()
    platform = Platform(
        run_id=uuid.uuid4().hex[:8],
        ports=Ports().shifted(args.port_offset),
        kafka=os.environ.get("SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        mongo_url=os.environ.get("SWITCHBOARD_MONGO_URL", "mongodb://127.0.0.1:27017/"),
        api_key="bench-key",
        simulator_env={"SWITCHBOARD_SIM_TTFT_MS": "0", "SWITCHBOARD_SIM_TOKEN_DELAY_MS": "0"},
        log_dir=ROOT / ".local" / "logs" / "routing-latency",
        ready_timeout_s=args.ready_timeout_s,
    )
    texts = messages(args.data) * args.rounds
    try:
        platform.start()  # inside: a process that failed to start is stopped too
        errors = asyncio.run(
            send_all(platform.gateway_target, platform.api_key, texts, args.timeout_s)
        )
        url = f"http://127.0.0.1:{platform.ports.orchestrator_health}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            histogram = buckets(response.read().decode())
    finally:
        platform.stop()
    print(f"{len(texts)} turns through the gateway, {errors} errors")
    for kind, cumulative in histogram.items():
        total = cumulative[-1][1]
        within = dict(cumulative).get(0.005, 0.0)
        print(
            f"classifier {kind}: {total:.0f} decisions, {100 * within / max(total, 1):.1f}% "
            f"within 5 ms; p50 {1000 * quantile(cumulative, 0.5):.2f} ms, "
            f"p99 {1000 * quantile(cumulative, 0.99):.2f} ms (interpolated in the buckets)"
        )
        print("  cumulative: " + ", ".join(f"<={b * 1000:g} ms {c:.0f}" for b, c in cumulative))


if __name__ == "__main__":
    main()
