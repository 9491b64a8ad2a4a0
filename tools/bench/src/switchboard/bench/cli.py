"""The command line of `python -m switchboard.bench` (every phase, bound and peer)."""

import argparse
import os
from pathlib import Path

from switchboard.bench.compare import PACED_TOKEN_DELAY_MS
from switchboard.bench.conversations import CONVERSATION_TOKEN_DELAY_MS, CONVERSATION_TOKENS
from switchboard.bench.platform import ROOT


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m switchboard.bench", description=__doc__)
    parser.add_argument(
        "--peers",
        choices=("litellm", "none"),
        default="litellm",
        help="peers measured beside direct and Switchboard (none: a quick run)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds; the order alternates")
    parser.add_argument("--concurrency", type=int, default=50, help="streams in the load phase")
    parser.add_argument("--requests", type=int, default=600, help="load requests per round")
    parser.add_argument("--tokens", type=int, default=100, help="reply length in tokens")
    parser.add_argument("--warmup", type=int, default=100, help="requests per path first")
    parser.add_argument(
        "--probe-requests", type=int, default=100, help="one-at-a-time requests per round"
    )
    parser.add_argument(
        "--first-text-requests",
        "--paced-requests",
        dest="paced_requests",
        type=int,
        default=15,
        help=f"first visible text: one-at-a-time requests per round, tokens "
        f"{PACED_TOKEN_DELAY_MS} ms apart",
    )
    paced = parser.add_argument_group(
        "paced phase", "many conversations below saturation (0 conversations skips it)"
    )
    paced.add_argument("--paced-conversations", type=int, default=500, help="concurrent")
    paced.add_argument(
        "--paced-turns", type=int, default=3, help="turns per conversation and round (at most)"
    )
    paced.add_argument(
        "--paced-think-s", type=float, default=2.0, help="after a reply ends, before the next"
    )
    paced.add_argument(
        "--paced-seconds",
        type=float,
        default=120.0,
        help="no turn starts later than this into the phase (a turn in flight finishes)",
    )
    paced.add_argument(
        "--paced-ramp-s",
        type=float,
        default=None,
        help="the conversations' first messages spread over this (default: one reply "
        "plus the think time)",
    )
    paced.add_argument("--paced-tokens", type=int, default=CONVERSATION_TOKENS, help="reply length")
    paced.add_argument(
        "--paced-token-delay-ms",
        type=float,
        default=CONVERSATION_TOKEN_DELAY_MS,
        help="the simulator's gap between tokens",
    )
    memory = parser.add_argument_group("memory per open stream (0 streams skips it)")
    memory.add_argument(
        "--memory-streams", type=int, default=400, help="slow streams held open at the end"
    )
    memory.add_argument(
        "--memory-hold-s", type=float, default=120.0, help="how long each stream would last"
    )
    knowledge = parser.add_argument_group("knowledge retrieval, in-process (no sizes skips it)")
    knowledge.add_argument(
        "--knowledge-sizes",
        default="10000,100000",
        help="search latency at these chunk counts, comma separated (as make bench-knowledge)",
    )
    knowledge.add_argument(
        "--knowledge-queries", type=int, default=500, help="searches timed at each size"
    )
    parser.add_argument(
        "--soak-seconds",
        type=float,
        default=0.0,
        help="instead: the platform load alone for this long (soak mode, memory)",
    )
    parser.add_argument(
        "--soak-warmup-s",
        type=float,
        default=120.0,
        help="soak: memory growth is judged after this much of the load",
    )
    parser.add_argument(
        "--soak-trace",
        action="store_true",
        help="soak: run the services under tracemalloc and report what grew after the warm-up",
    )
    parser.add_argument("--workers-per-tier", type=int, default=1)
    parser.add_argument("--timeout-s", type=float, default=60.0, help="per request")
    parser.add_argument(
        "--phase-timeout-s", type=float, default=900.0, help="per phase of one path"
    )
    settle = parser.add_argument_group(
        "settling", "before each phase, wait until the monitored processes are quiet"
    )
    settle.add_argument(
        "--settle-cores",
        type=float,
        default=0.3,
        help="quiet: the processes together use at most this many cores over one window",
    )
    settle.add_argument("--settle-window-s", type=float, default=1.0, help="one measurement")
    settle.add_argument(
        "--settle-timeout-s",
        type=float,
        default=30.0,
        help="longest wait before a phase (0: no settling)",
    )
    parser.add_argument("--ready-timeout-s", type=float, default=120.0, help="per process start")
    parser.add_argument("--install-timeout-s", type=float, default=900.0, help="LiteLLM's install")
    parser.add_argument(
        "--stack-run-dir",
        type=Path,
        default=Path(os.environ.get("SWITCHBOARD_BENCH_STACK_RUN_DIR", ROOT / ".local" / "run")),
        help="where the local stack's pid files are (its servers' CPU is sampled)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    parser.add_argument(
        "--port-offset",
        type=int,
        default=int(os.environ.get("SWITCHBOARD_BENCH_PORT_OFFSET", "0")),
        help="added to every port the harness listens on (two runs side by side)",
    )
    return parser.parse_args(argv)
