"""`python -m switchboard.bench`: direct, LiteLLM and Switchboard (gRPC and HTTP) side by side
in one run (docs/benchmarks.md). Needs the local stack (Kafka, FerretDB, Redis)."""

import argparse
import asyncio
import dataclasses
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

from switchboard.bench import report, soak
from switchboard.bench.cli import parse_args
from switchboard.bench.compare import (
    DIRECT,
    GRPC,
    HTTP,
    LITELLM,
    LOAD_DRIVER,
    PACED_TOKEN_DELAY_MS,
    PACED_TOKENS,
    SIMULATOR,
    PathSpec,
    Phase,
    compare,
    markdown,
    run_rounds,
    write,
)
from switchboard.bench.guardrails import guardrails_cost
from switchboard.bench.load import (
    MESSAGES,
    LoadResult,
    Pacing,
    direct_load,
    http_load,
    openai_load,
    platform_load,
)
from switchboard.bench.peers import (
    CONVERSATION_MODEL,
    LITELLM_VERSION,
    MODEL,
    PACED_MODEL,
    LiteLLM,
)
from switchboard.bench.platform import ROOT, Platform, Ports
from switchboard.bench.procstats import Sampler, wait_until_idle
from switchboard.bench.streams import measure_stream_memory
from switchboard.knowledge import bench as knowledge_bench


async def measure(args: argparse.Namespace, platform: Platform) -> dict[str, Any]:
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
        {
            **services,
            **platform.infrastructure_pids(args.stack_run_dir),
            report.LOAD_DRIVER: os.getpid(),
        }
    )
    sampler.start()
    soaking = args.soak_seconds or None
    requests = 10**9 if soaking else args.requests
    traced = {n: pid for n, pid in services.items() if n != SIMULATOR}
    snapshot = None
    if soaking and platform.trace_dir is not None:
        # The first snapshot at the warm-up's end; the second after the load.
        loop = asyncio.get_running_loop()
        snapshot = loop.call_later(args.soak_warmup_s, soak.signal_snapshots, traced)
    through = await platform_load(
        platform.gateway_target,
        key,
        args.concurrency,
        requests,
        args.tokens,
        args.timeout_s,
        deadline_s=soaking,
    )
    await sampler.stop()
    if snapshot is not None and platform.trace_dir is not None:
        snapshot.cancel()
        soak.signal_snapshots(traced)
        await asyncio.sleep(10)  # a snapshot of a large heap takes a few seconds
    direct = await direct_load(
        f"{platform.simulator_url}/v1",
        args.concurrency,
        # A soak's whole count again would double its length for the same baseline.
        min(len(through.samples), args.requests) if soaking else len(through.samples),
        args.tokens,
        args.timeout_s,
    )
    http = None
    if not soaking:
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
    if soaking:
        result["memory"] = soak.memory_figures(result, args.soak_warmup_s)
        if platform.trace_dir is not None:
            result["traced_growth"] = soak.traced_growth(platform.trace_dir, list(traced))
    return result


def _sim(phase: Phase, tokens: int) -> dict[str, str]:
    """The simulator's controls for a phase's requests (metadata; LiteLLM's come from its
    config, by model name)."""
    if phase.pacing is not None:
        return {
            "sim.tokens": str(phase.pacing.tokens),
            "sim.delay_ms": f"{phase.pacing.token_delay_ms:g}",
        }
    if phase.paced:
        return {"sim.tokens": str(PACED_TOKENS), "sim.delay_ms": str(PACED_TOKEN_DELAY_MS)}
    return {"sim.tokens": str(tokens)}


def pacing(args: argparse.Namespace) -> Pacing | None:
    """The paced phase's schedule from the command line, or None to skip it."""
    if args.paced_conversations <= 0 or args.paced_turns <= 0:
        return None
    shape = Pacing(
        conversations=args.paced_conversations,
        turns=args.paced_turns,
        think_s=args.paced_think_s,
        ramp_s=0.0,
        duration_s=args.paced_seconds,
        tokens=args.paced_tokens,
        token_delay_ms=args.paced_token_delay_ms,
    )
    ramp = args.paced_ramp_s
    if ramp is None:
        ramp = shape.nominal_reply_s + shape.think_s
    return dataclasses.replace(shape, ramp_s=ramp)


def path_specs(
    args: argparse.Namespace, platform: Platform, peer: LiteLLM | None, servers: tuple[str, ...]
) -> list[PathSpec]:
    """The paths of this run, in the first round's order."""
    key, t = platform.api_key, args.timeout_s

    def tokens(phase: Phase) -> int:
        if phase.pacing is not None:
            return phase.pacing.tokens
        return PACED_TOKENS if phase.paced else args.tokens

    async def direct(phase: Phase) -> LoadResult:
        return await openai_load(
            DIRECT,
            f"{platform.simulator_url}/v1",
            "bench",
            "gpt-4o-mini",
            phase.concurrency,
            phase.requests,
            t,
            metadata=_sim(phase, args.tokens),
            pacing=phase.pacing,
        )

    async def grpc_path(phase: Phase) -> LoadResult:
        return await platform_load(
            platform.gateway_target,
            key,
            phase.concurrency,
            phase.requests,
            tokens(phase),
            t,
            sim=_sim(phase, args.tokens),
            pacing=phase.pacing,
        )

    async def http_path(phase: Phase) -> LoadResult:
        return await openai_load(
            HTTP,
            f"{platform.http_url}/v1",
            key,
            "cheap",
            phase.concurrency,
            phase.requests,
            t,
            metadata=_sim(phase, args.tokens),
            system_prompt=False,
            conversations=True,
            pacing=phase.pacing,
        )

    services = tuple(n for n in platform.pids() if n != SIMULATOR)
    specs = [PathSpec(DIRECT, direct)]
    if peer is not None:
        litellm = peer

        async def litellm_path(phase: Phase) -> LoadResult:
            # Its simulator controls come from its config (it does not forward metadata).
            if phase.pacing is not None:
                model = CONVERSATION_MODEL
            else:
                model = PACED_MODEL if phase.paced else MODEL
            return await openai_load(
                LITELLM,
                f"{litellm.url}/v1",
                litellm.master_key,
                model,
                phase.concurrency,
                phase.requests,
                t,
                pacing=phase.pacing,
            )

        specs.append(PathSpec(LITELLM, litellm_path, services=(LITELLM,)))
    specs += [
        PathSpec(GRPC, grpc_path, services=services, servers=servers),
        PathSpec(HTTP, http_path, services=services, servers=servers),
    ]
    return specs


async def side_by_side(
    args: argparse.Namespace, platform: Platform, peer: LiteLLM | None
) -> dict[str, object]:
    """Warm every path up, then run the rounds and compare."""
    servers_pids = platform.infrastructure_pids(args.stack_run_dir)
    specs = path_specs(args, platform, peer, tuple(servers_pids))
    if args.warmup:
        warm = Phase("warmup", min(10, args.concurrency), args.warmup, paced=False)
        for spec in specs:
            await asyncio.wait_for(spec.run(warm), args.phase_timeout_s)
    monitored = {**platform.pids(), **servers_pids, LOAD_DRIVER: os.getpid()}
    if peer is not None:
        monitored[LITELLM] = peer.pid()
    shape = pacing(args)
    phases = [
        Phase("probe", 1, args.probe_requests, paced=False),
        Phase("load", args.concurrency, args.requests, paced=False),
        Phase("paced", 1, args.paced_requests, paced=True),
    ]
    if shape is not None:
        phases.insert(
            2,
            Phase(
                "conversations",
                shape.conversations,
                shape.conversations * shape.turns,
                paced=False,
                pacing=shape,
            ),
        )
    phases = [p for p in phases if p.requests > 0]
    quiet = {n: pid for n, pid in monitored.items() if n != LOAD_DRIVER}

    async def settle() -> tuple[float, float]:
        return await wait_until_idle(
            quiet,
            max_cores=args.settle_cores,
            window_s=args.settle_window_s,
            timeout_s=args.settle_timeout_s,
            with_children=frozenset({LITELLM}),
        )

    runs = await run_rounds(
        specs,
        phases,
        args.rounds,
        monitored,
        args.phase_timeout_s,
        frozenset({LITELLM}),
        settle=settle if args.settle_timeout_s > 0 else None,
    )
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    config.update(first_text_token_delay_ms=PACED_TOKEN_DELAY_MS, first_text_tokens=PACED_TOKENS)
    if shape is not None:
        config["paced_ramp_s"] = shape.ramp_s
    if peer is not None:
        config["litellm_version"] = LITELLM_VERSION
    result = compare(specs, runs, config)
    if args.memory_streams > 0:
        print(f"memory: holding {args.memory_streams} streams open", flush=True)
        held = {n: pid for n, pid in platform.pids().items() if n != SIMULATOR}
        result["stream_memory"] = await asyncio.wait_for(
            measure_stream_memory(
                platform.gateway_target,
                platform.api_key,
                held,
                args.memory_streams,
                args.memory_hold_s,
                open_timeout_s=args.memory_hold_s / 2,
            ),
            args.phase_timeout_s,
        )
    return result


def _stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so that every started process is stopped."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main() -> None:
    args = parse_args()
    _stop_on_sigterm()
    log_dir = ROOT / ".local" / "logs" / "bench"
    platform = Platform(
        run_id=uuid.uuid4().hex[:8],
        ports=Ports().shifted(args.port_offset),
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
        log_dir=log_dir,
        workers_per_tier=args.workers_per_tier,
        ready_timeout_s=args.ready_timeout_s,
        trace_dir=args.out / "traces" if args.soak_seconds and args.soak_trace else None,
        # A worker serves 64 generations at once by default: 500 paced conversations of
        # 4.5-s replies would queue in it. Sized as a deployment for that load would be.
        worker_max_concurrency=max(64, args.paced_conversations, args.memory_streams),
    )
    if args.soak_seconds:
        try:
            platform.start()  # inside: a process that never got ready is stopped too
            result = asyncio.run(measure(args, platform))
        finally:
            platform.stop()
        print(report.table(result))
        print("\n" + "\n".join(soak.lines(result["memory"], args.soak_warmup_s)))
        for name, traced in result.get("traced_growth", {}).items():
            print(f"\n{name}: grew most after the warm-up (tracemalloc):")
            for site in traced["top_growth"][:5]:
                print(f"  {site['kib']:+9.0f} KiB {site['count']:+7d}  {site['where'][-1]}")
        json_path, png_path = report.write(result, args.out)
        print(f"\nwrote {json_path} and {png_path}")
        return
    peer = None
    if args.peers == "litellm":
        peer = LiteLLM(
            root=ROOT,
            port=platform.ports.litellm,
            simulator_base_url=f"{platform.simulator_url}/v1",
            log_dir=log_dir,
            uv=ROOT / ".local" / "bootstrap" / "bin" / "uv",
            python=Path(sys.executable),
            install_timeout_s=args.install_timeout_s,
            ready_timeout_s=args.ready_timeout_s,
        )
        if peer.install():
            print(f"installed LiteLLM {LITELLM_VERSION} into {peer.venv}")
    try:
        platform.start()
        if peer is not None:
            peer.start()
        result = asyncio.run(side_by_side(args, platform, peer))
    finally:
        if peer is not None:
            peer.stop()
        platform.stop()
    # In-process, after the load: the guardrails' share of a turn, reported beside the paths.
    cost = guardrails_cost(MESSAGES)
    result["guardrails"] = cost
    print(markdown(result))
    print(
        "\nguardrails per turn (thread CPU): p50 {:.0f} µs, p99 {:.0f} µs; the message's "
        "embedding for the classifier: p50 {:.1f} ms, p99 {:.1f} ms".format(
            cost["per_turn_us"][50],
            cost["per_turn_us"][99],
            cost["embedding_us"][50] / 1000,
            cost["embedding_us"][99] / 1000,
        )
    )
    sizes = [int(size) for size in args.knowledge_sizes.split(",") if size.strip()]
    if sizes:
        # In-process too: the search the turn runs (issue 17's targets), and ingestion.
        result["knowledge"] = knowledge_bench.measure(
            sizes, args.knowledge_queries, ROOT / "tests" / "data" / "knowledge_corpus", 3
        )
        print("\nknowledge retrieval (in-process):")
        print("\n".join(f"  {line}" for line in knowledge_bench.lines(result["knowledge"])))
    paths = write(result, args.out)
    print("\nwrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
