"""`python -m switchboard.bench`: see `--help`. Needs the local stack (`make stack-up`)."""

import argparse
import asyncio
import os
import uuid
from pathlib import Path

from switchboard.bench import report
from switchboard.bench.guardrails import guardrails_cost
from switchboard.bench.load import MESSAGES, direct_load, http_load, platform_load
from switchboard.bench.platform import ROOT, Platform, Ports
from switchboard.bench.procstats import Sampler


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m switchboard.bench", description=__doc__)
    parser.add_argument("--concurrency", type=int, default=100, help="concurrent conversations")
    parser.add_argument("--requests", type=int, default=2_000, help="requests per load")
    parser.add_argument("--tokens", type=int, default=100, help="reply length in tokens")
    parser.add_argument("--warmup", type=int, default=200, help="requests before measuring")
    parser.add_argument(
        "--soak-seconds",
        type=float,
        default=0.0,
        help="run the platform load for this long instead (soak mode)",
    )
    parser.add_argument(
        "--probe-requests",
        type=int,
        default=100,
        help="then one request at a time through each path: the overhead without queueing",
    )
    parser.add_argument("--workers-per-tier", type=int, default=1)
    parser.add_argument("--timeout-s", type=float, default=60.0, help="per request")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    return parser.parse_args()


async def measure(args: argparse.Namespace, platform: Platform) -> dict[str, object]:
    key = platform.api_key
    probe = None
    if args.probe_requests:
        # At high concurrency both paths queue on the two cores (the direct one on the load
        # driver's own SDK parsing): one request at a time, before any load leaves a backlog
        # behind, shows the latency the hops add.
        probe = (
            await platform_load(
                platform.gateway_target, key, 1, args.probe_requests, args.tokens, args.timeout_s
            ),
            await direct_load(
                f"{platform.simulator_url}/v1", 1, args.probe_requests, args.tokens, args.timeout_s
            ),
        )
    http_probe = None
    if args.probe_requests and not args.soak_seconds:
        http_probe = await http_load(
            f"{platform.http_url}/v1", key, 1, args.probe_requests, args.tokens, args.timeout_s
        )
    if args.warmup:
        await platform_load(
            platform.gateway_target, key, args.concurrency, args.warmup, args.tokens, args.timeout_s
        )
    services = platform.pids()
    sampler = Sampler(
        {**services, **platform.infrastructure_pids(), report.LOAD_DRIVER: os.getpid()}
    )
    sampler.start()
    soak = args.soak_seconds or None
    requests = 10**9 if soak else args.requests
    through = await platform_load(
        platform.gateway_target,
        key,
        args.concurrency,
        requests,
        args.tokens,
        args.timeout_s,
        deadline_s=soak,
    )
    await sampler.stop()
    direct = await direct_load(
        f"{platform.simulator_url}/v1",
        args.concurrency,
        len(through.samples),
        args.tokens,
        args.timeout_s,
    )
    http = None
    if not soak:
        # The same load through the HTTP door, sampled the same way.
        http_sampler = Sampler({**services, report.LOAD_DRIVER: os.getpid()})
        http_sampler.start()
        http_result = await http_load(
            f"{platform.http_url}/v1",
            key,
            args.concurrency,
            len(through.samples),
            args.tokens,
            args.timeout_s,
        )
        await http_sampler.stop()
        http = report.HttpPath(
            http_result, {name: http_sampler.stats[name] for name in services}, http_probe
        )
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    shared = {name: stats for name, stats in sampler.stats.items() if name not in services}
    result = report.build_report(
        config,
        through,
        direct,
        {name: sampler.stats[name] for name in services},
        probe,
        shared,
        http,
    )
    result["guardrails"] = guardrails_cost(MESSAGES)
    return result


def main() -> None:
    args = parse_args()
    platform = Platform(
        run_id=uuid.uuid4().hex[:8],
        ports=Ports(),
        kafka=os.environ.get("SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        mongo_url=os.environ.get("SWITCHBOARD_MONGO_URL", "mongodb://127.0.0.1:27017/"),
        api_key="bench-key",
        # Zero model latency: what is measured is the platform's own cost.
        simulator_env={
            "SWITCHBOARD_SIM_TTFT_MS": "0",
            "SWITCHBOARD_SIM_TOKEN_DELAY_MS": "0",
            "SWITCHBOARD_SIM_REPLY_TOKENS": str(args.tokens),
            "SWITCHBOARD_SIM_JOURNAL_SIZE": "100",
        },
        log_dir=ROOT / ".local" / "logs" / "bench",
        workers_per_tier=args.workers_per_tier,
    )
    platform.start()
    try:
        result = asyncio.run(measure(args, platform))
    finally:
        platform.stop()
    print(report.table(result))
    json_path, png_path = report.write(result, args.out)
    print(f"\nwrote {json_path} and {png_path}")


if __name__ == "__main__":
    main()
