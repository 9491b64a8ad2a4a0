"""Resident memory per open stream (issue 18, must-have 4).

K slow replies are opened through the gateway's gRPC API in steps (the simulator paces them
so that each stays open for the whole measurement); once every stream of a step has its first
delta, each process's RSS is sampled. Bytes per stream is the least-squares slope of RSS over
the number of open streams, fitted over the levels with streams open (from K/steps to K):
it leaves out what a process allocates once for its first streams (pools, lazy imports),
which a difference from no stream would count. RSS with no stream is reported beside it.
"""

import asyncio
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import psutil

from switchboard.bench.load import MESSAGES
from switchboard.v1.chat_pb2 import ChatOptions, ChatRequest
from switchboard.v1.chat_pb2_grpc import ChatServiceStub


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """The least-squares slope of y over x, or None when x does not vary."""
    if len(points) < 2:
        return None
    mean_x = statistics.fmean(x for x, _ in points)
    mean_y = statistics.fmean(y for _, y in points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def per_stream(levels: Sequence[tuple[int, dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """Per process: RSS (bytes) at each number of open streams, and the bytes per stream."""
    names = sorted({name for _, rss in levels for name in rss})
    figures: dict[str, dict[str, Any]] = {}
    for name in names:
        points = [(float(n), rss[name]) for n, rss in levels if name in rss]
        open_points = [(x, y) for x, y in points if x > 0]
        figures[name] = {
            "rss_mb": {n: rss / 2**20 for n, rss in ((int(x), y) for x, y in points)},
            "bytes_per_stream": slope(open_points if len(open_points) >= 2 else points),
        }
    return figures


def steps(total: int, count: int) -> list[int]:
    """The numbers of open streams to measure at, from a few to `total` (count steps)."""
    count = max(1, min(count, total))
    return sorted({max(1, round(total * (i + 1) / count)) for i in range(count)})


def rss_bytes(pids: dict[str, int], samples: int = 3, interval_s: float = 0.2) -> dict[str, float]:
    """Each process's RSS, the median of `samples` reads (a read is one moment of a
    process that allocates and frees all the time)."""
    processes = {name: psutil.Process(pid) for name, pid in pids.items()}
    reads: dict[str, list[float]] = {name: [] for name in pids}
    for i in range(samples):
        if i:
            time.sleep(interval_s)
        for name, process in processes.items():
            reads[name].append(float(process.memory_info().rss))
    return {name: statistics.median(values) for name, values in reads.items()}


async def measure_stream_memory(
    target: str,
    api_key: str,
    pids: dict[str, int],
    streams: int,
    hold_s: float,
    open_timeout_s: float,
    step_count: int = 4,
    read_rss: Callable[[dict[str, int]], dict[str, float]] = rss_bytes,
) -> dict[str, Any]:
    """Open `streams` replies of about `hold_s` each through the gateway in `step_count`
    steps, read every process's RSS before and at each step, then cancel them."""
    tokens = max(2, int(hold_s))  # a token a second: little traffic, the stream stays open
    controls = {"sim.tokens": str(tokens), "sim.delay_ms": "1000"}
    metadata = (("authorization", f"Bearer {api_key}"),)
    opened: list[asyncio.Event] = []
    failures: list[str] = []
    levels: list[tuple[int, dict[str, float]]] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = ChatServiceStub(channel)

        async def hold(index: int, first: asyncio.Event) -> None:
            request = ChatRequest(
                message=MESSAGES[index % len(MESSAGES)],
                user_id=f"bench-stream-{index}",
                options=ChatOptions(tier="cheap", metadata=controls),
            )
            try:
                async for event in stub.Chat(request, metadata=metadata, timeout=hold_s * 3):
                    if event.WhichOneof("event") == "delta":
                        first.set()
                    elif event.WhichOneof("event") == "error":
                        failures.append(f"error:{event.error.code}")
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.CANCELLED:
                    failures.append(f"status:{exc.code().name}")
            finally:
                first.set()  # a stream that failed before its first delta is waited for no more

        tasks: list[asyncio.Task[None]] = []
        started = time.perf_counter()
        try:
            levels.append((0, await asyncio.to_thread(read_rss, pids)))
            for level in steps(streams, step_count):
                while len(tasks) < level:
                    first = asyncio.Event()
                    opened.append(first)
                    tasks.append(asyncio.create_task(hold(len(tasks), first)))
                await asyncio.wait_for(asyncio.gather(*(e.wait() for e in opened)), open_timeout_s)
                open_now = sum(1 for t in tasks if not t.done())
                levels.append((open_now, await asyncio.to_thread(read_rss, pids)))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "streams": streams,
        "hold_s": hold_s,
        "open_levels": [n for n, _ in levels],
        "seconds_to_open": time.perf_counter() - started,
        "failures": failures,
        "processes": per_stream(levels),
    }


def stream_memory_lines(figures: dict[str, Any]) -> list[str]:
    """The printed summary: bytes per open stream by process."""
    lines = [
        f"Resident memory per open stream (gRPC, open streams {figures['open_levels']}, "
        f"RSS slope):",
        "",
        "| process | RSS at each level (MB) | KiB per open stream |",
        "|---|---|---|",
    ]
    for name, p in figures["processes"].items():
        per = p["bytes_per_stream"]
        rss = " / ".join(f"{v:.1f}" for v in p["rss_mb"].values())
        lines.append(f"| {name} | {rss} | {'—' if per is None else f'{per / 1024:.1f}'} |")
    if figures["failures"]:
        lines.append(f"\n{len(figures['failures'])} streams failed: {figures['failures'][:5]}")
    return lines
