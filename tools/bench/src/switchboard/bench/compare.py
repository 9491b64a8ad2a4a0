"""Side by side: the same phases through every path (direct, LiteLLM, Switchboard over gRPC
and over HTTP) in one run, in an order that alternates between rounds, and the figures as
absolute values and as ratios to direct and to LiteLLM.

Phases, per round and path:
- `probe`: one request at a time, zero model latency: the TTFT the path adds;
- `load`: `concurrency` streams, zero model latency: requests/s, and CPU per request of every
  process of the path (sampled over this phase only);
- `conversations` (the paced phase, reported as `conversations`): many conversations below
  saturation, tokens `CONVERSATION_TOKEN_DELAY_MS` apart, a think time between turns
  (conversations.py): TTFT and its overhead, inter-token gaps, CPU per turn;
- `paced` (first visible text; the name is kept for the figures' readers): one request at a
  time, the simulator sending tokens `PACED_TOKEN_DELAY_MS` apart: when the first visible
  text arrives.
"""

import asyncio
import gc
import json
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from switchboard.bench import conversations
from switchboard.bench.load import LoadResult, Pacing, Sample
from switchboard.bench.procstats import Sampler
from switchboard.bench.report import percentile
from switchboard.bench.streams import stream_memory_lines

PACED_TOKEN_DELAY_MS = 50
PACED_TOKENS = 20
PHASES = ("probe", "load", "conversations", "paced")
# The phases whose processes' CPU is sampled.
SAMPLED = frozenset({"load", "conversations"})
DIRECT, LITELLM, GRPC, HTTP = "direct", "litellm", "switchboard-grpc", "switchboard-http"
LABELS = {
    DIRECT: "direct",
    LITELLM: "LiteLLM",
    GRPC: "Switchboard gRPC",
    HTTP: "Switchboard HTTP",
}
SIMULATOR = "simulator"
LOAD_DRIVER = "load-driver"
SERVERS = ("kafka", "ferretdb", "redis", "jaeger")


@dataclass(frozen=True)
class Phase:
    """One phase's shape."""

    name: str
    concurrency: int
    requests: int
    paced: bool
    """First visible text: tokens PACED_TOKEN_DELAY_MS apart."""
    pacing: Pacing | None = None
    """The paced conversations (tokens CONVERSATION_TOKEN_DELAY_MS apart), if this is them."""


Runner = Callable[[Phase], Awaitable[LoadResult]]


@dataclass(frozen=True)
class PathSpec:
    """One way to the simulator: how to drive a phase through it, and which monitored
    processes are its own (`services`) and which are shared servers it uses (`servers`)."""

    name: str
    run: Runner
    services: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()


@dataclass
class PhaseRun:
    """One phase through one path in one round; `cpu_s` by monitored process (load only)."""

    round: int
    position: int
    result: LoadResult
    cpu_s: dict[str, float] = field(default_factory=dict)
    pacing: Pacing | None = None


Settle = Callable[[], Awaitable[tuple[float, float]]]
"""Waits until the machine is quiet; returns the seconds waited and the cores then in use."""


def settle_note(settled: tuple[float, float]) -> str:
    """How long a phase waited for a quiet machine, for the log."""
    waited, cores = settled
    return f"{waited:.1f}s settling ({cores:.2f} cores)"


def round_order(names: Sequence[str], round_index: int) -> list[str]:
    """The paths' order in a round: as given in even rounds, reversed in odd ones, so that
    over two rounds every path has the same mean position (a machine warming up, or another
    tenant's load ending, favours no path)."""
    return list(names) if round_index % 2 == 0 else list(reversed(names))


async def run_rounds(
    paths: Sequence[PathSpec],
    phases: Sequence[Phase],
    rounds: int,
    monitored: dict[str, int],
    phase_timeout_s: float,
    with_children: frozenset[str] = frozenset(),
    log: Callable[[str], None] = lambda line: print(line, flush=True),
    settle: Settle | None = None,
) -> dict[str, dict[str, list[PhaseRun]]]:
    """Every phase through every path, `rounds` times; the load and paced phases sample the
    CPU of every `monitored` process (all of them for every path: the servers' figures during the
    other paths are their background). A phase that overruns `phase_timeout_s` fails the run.
    `settle`, when given, is awaited before each phase (`procstats.wait_until_idle`)."""
    runs: dict[str, dict[str, list[PhaseRun]]] = {
        p.name: {ph.name: [] for ph in phases} for p in paths
    }
    by_name = {p.name: p for p in paths}
    for r in range(rounds):
        order = round_order([p.name for p in paths], r)
        log(f"round {r + 1}/{rounds}: {', '.join(order)}")
        for phase in phases:
            for position, name in enumerate(order):
                waited = f", after {settle_note(await settle())}" if settle else ""
                # The load driver's own full collections walked every sample of the earlier
                # phases (a pause of 70-90 ms by round 2), counted as the latency of whichever
                # request was in flight: what is alive now is never walked again.
                gc.collect()
                gc.freeze()
                sampler = (
                    Sampler(monitored, with_children=with_children)
                    if phase.name in SAMPLED
                    else None
                )
                if sampler is not None:
                    sampler.start()
                try:
                    result = await asyncio.wait_for(by_name[name].run(phase), phase_timeout_s)
                finally:
                    if sampler is not None:
                        await sampler.stop()
                cpu = {k: s.cpu_s for k, s in sampler.stats.items()} if sampler else {}
                runs[name][phase.name].append(PhaseRun(r, position, result, cpu, phase.pacing))
                ok = sum(1 for s in result.samples if s.outcome == "ok")
                done = f"{ok}/{len(result.samples)} ok in {result.wall_s:.1f}s{waited}"
                ttft_ms = [s.ttft_s * 1000 for s in result.samples if s.ttft_s is not None]
                if ttft_ms:
                    # Per round, so that a round out of line with the other shows in the log.
                    p50, p99 = percentile(ttft_ms, 50), percentile(ttft_ms, 99)
                    done += f", TTFT p50 {p50:.1f} p99 {p99:.1f} ms"
                log(f"  {phase.name:13} {name:17} {done}")
    return runs


def _ok(samples: list[Sample]) -> list[Sample]:
    return [s for s in samples if s.outcome == "ok" and s.ttft_s is not None]


def _ttft_ms(runs: list[PhaseRun]) -> list[float]:
    return sorted((s.ttft_s or 0.0) * 1000 for run in runs for s in _ok(run.result.samples))


def _quantiles(values: list[float]) -> dict[int, float]:
    return {q: percentile(values, q) for q in (50, 95, 99)}


def _outcomes(runs: list[PhaseRun]) -> dict[str, int]:
    found: dict[str, int] = {}
    for run in runs:
        for sample in run.result.samples:
            found[sample.outcome] = found.get(sample.outcome, 0) + 1
    return found


def background_rates(
    runs: dict[str, dict[str, list[PhaseRun]]], paths: Sequence[PathSpec], phase: str = "load"
) -> dict[str, float]:
    """CPU seconds per second of each shared server while no path using it ran `phase`:
    what other users of the shared stack cost, to be taken off a path's server figures."""
    used = {server for p in paths for server in p.servers}
    rates: dict[str, float] = {}
    for server in used:
        cpu = wall = 0.0
        for p in paths:
            if server in p.servers:
                continue
            for run in runs[p.name].get(phase, []):
                if server in run.cpu_s:
                    cpu += run.cpu_s[server]
                    wall += run.result.wall_s
        if wall > 0:
            rates[server] = cpu / wall
    return rates


def cpu_figures(
    spec: PathSpec, phase_runs: list[PhaseRun], background: dict[str, float], completed: int
) -> dict[str, Any]:
    """CPU ms per completed request (turn) of every process of the path over `phase_runs`:
    services, servers less their background, the simulator and the load driver apart."""
    wall = sum(r.result.wall_s for r in phase_runs)

    def cpu(name: str) -> float:
        return sum(r.cpu_s.get(name, 0.0) for r in phase_runs)

    servers_raw = {s: cpu(s) for s in spec.servers}
    servers = {s: max(0.0, v - background.get(s, 0.0) * wall) for s, v in servers_raw.items()}
    services = {s: cpu(s) for s in spec.services}
    # No completed request: no figure (a CPU total over one request would mislead).
    ms = 1000 / completed if completed else math.nan
    return {
        "services": sum(services.values()) * ms,
        "servers": sum(servers.values()) * ms,
        "servers_raw": sum(servers_raw.values()) * ms,
        "path": (sum(services.values()) + sum(servers.values())) * ms,
        "simulator": cpu(SIMULATOR) * ms,
        "load_driver": cpu(LOAD_DRIVER) * ms,
        "processes": {k: v * ms for k, v in {**services, **servers}.items()},
    }


def path_figures(
    spec: PathSpec,
    runs: dict[str, list[PhaseRun]],
    background: dict[str, float],
    paced_background: dict[str, float] | None = None,
) -> dict[str, Any]:
    """One path's absolute figures, pooled over the rounds."""
    figures: dict[str, Any] = {"label": LABELS.get(spec.name, spec.name)}
    if runs.get("probe"):
        figures["probe"] = {
            "requests": sum(len(r.result.samples) for r in runs["probe"]),
            "outcomes": _outcomes(runs["probe"]),
            "ttft_ms": _quantiles(_ttft_ms(runs["probe"])),
        }
    if runs.get("load"):
        load = runs["load"]
        ok = sum(len(_ok(r.result.samples)) for r in load)
        wall = sum(r.result.wall_s for r in load)
        figures["load"] = {
            "requests": sum(len(r.result.samples) for r in load),
            "outcomes": _outcomes(load),
            "wall_s": wall,
            "requests_per_s": ok / wall if wall else 0.0,
            "ttft_ms": _quantiles(_ttft_ms(load)),
            "per_round_requests_per_s": [
                len(_ok(r.result.samples)) / r.result.wall_s if r.result.wall_s else 0.0
                for r in load
            ],
        }
        figures["cpu_ms_per_request"] = cpu_figures(spec, load, background, ok)
    if runs.get("conversations"):
        paced = runs["conversations"]
        pacing = next((r.pacing for r in paced if r.pacing is not None), None)
        section = conversations.phase_figures([r.result for r in paced], pacing)
        section["cpu_ms_per_turn"] = cpu_figures(
            spec, paced, paced_background or {}, section["turns_ok"]
        )
        figures["conversations"] = section
    if runs.get("paced"):
        figures["paced"] = {
            "token_delay_ms": PACED_TOKEN_DELAY_MS,
            "requests": sum(len(r.result.samples) for r in runs["paced"]),
            "outcomes": _outcomes(runs["paced"]),
            "first_text_ms": _quantiles(_ttft_ms(runs["paced"])),
        }
    return figures


def _difference(value: float | None, reference: float | None) -> float | None:
    """value - reference, or None when either is missing (a run without that phase)."""
    return None if value is None or reference is None else value - reference


def ratio(value: float | None, reference: float | None) -> float | None:
    """value / reference, or None when either is missing or the reference is zero."""
    if value is None or reference is None or math.isnan(value) or math.isnan(reference):
        return None
    if reference == 0:
        return None
    return value / reference


def _get(figures: dict[str, Any], *keys: Any) -> float | None:
    node: Any = figures
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node) if isinstance(node, int | float) else None


def _at(*keys: Any) -> Callable[[dict[str, Any]], float | None]:
    return lambda figures: _get(figures, *keys)


_PACED_OVERHEAD = ("conversations", "ttft_overhead_ms")
_PACED_GAP_EXCESS = ("conversations", "gap_p99_excess_ms")
_PACED_CPU = ("conversations", "cpu_ms_per_turn")

# The headline figures: (key, label, how to read it from a path's figures).
HEADLINE: tuple[tuple[str, str, Callable[[dict[str, Any]], float | None]], ...] = (
    ("ttft_p50_ms", "one at a time: TTFT p50 (ms)", _at("probe", "ttft_ms", 50)),
    ("ttft_p99_ms", "one at a time: TTFT p99 (ms)", _at("probe", "ttft_ms", 99)),
    ("overhead_p50_ms", "one at a time: TTFT overhead p50 (ms)", _at("overhead_ms", 50)),
    ("overhead_p99_ms", "one at a time: TTFT overhead p99 (ms)", _at("overhead_ms", 99)),
    ("cpu_ms", "CPU per request, path (ms)", _at("cpu_ms_per_request", "path")),
    ("cpu_services_ms", "  of it services (ms)", _at("cpu_ms_per_request", "services")),
    ("cpu_servers_ms", "  of it servers (ms)", _at("cpu_ms_per_request", "servers")),
    ("rps", "requests/s at concurrency {c}", _at("load", "requests_per_s")),
    ("loaded_ttft_p50_ms", "TTFT p50 at concurrency {c} (ms)", _at("load", "ttft_ms", 50)),
    ("paced_turns", "paced, {n} conversations: turns completed", _at("conversations", "turns_ok")),
    ("paced_errors", "  turns failed", _at("conversations", "errors")),
    ("paced_turns_per_s", "  turns/s", _at("conversations", "turns_per_s")),
    ("paced_ttft_p50_ms", "  TTFT p50 (ms)", _at("conversations", "ttft_ms", 50)),
    ("paced_ttft_p99_ms", "  TTFT p99 (ms)", _at("conversations", "ttft_ms", 99)),
    ("paced_overhead_p50_ms", "  TTFT overhead p50 (ms)", _at(*_PACED_OVERHEAD, 50)),
    ("paced_overhead_p99_ms", "  TTFT overhead p99 (ms)", _at(*_PACED_OVERHEAD, 99)),
    ("paced_gap_p99_ms", "  inter-token gap p99 (ms)", _at("conversations", "gap_ms", 99)),
    ("paced_gap_excess_ms", "  gap p99 over direct's (ms)", _at(*_PACED_GAP_EXCESS)),
    ("paced_reply_p50_s", "  reply duration p50 (s)", _at("conversations", "reply_s", 50)),
    ("paced_cpu_ms", "  CPU per turn, path (ms)", _at(*_PACED_CPU, "path")),
    ("paced_cpu_services_ms", "    of it services (ms)", _at(*_PACED_CPU, "services")),
    ("paced_cpu_servers_ms", "    of it servers (ms)", _at(*_PACED_CPU, "servers")),
    (
        "first_text_p50_ms",
        "first visible text p50, tokens 50 ms apart (ms)",
        _at("paced", "first_text_ms", 50),
    ),
    (
        "first_text_p99_ms",
        "first visible text p99, tokens 50 ms apart (ms)",
        _at("paced", "first_text_ms", 99),
    ),
)


def compare(
    paths: Sequence[PathSpec],
    runs: dict[str, dict[str, list[PhaseRun]]],
    config: dict[str, Any],
) -> dict[str, Any]:
    """The run's document: per path its figures, its overhead over direct (one at a time),
    and every headline figure's ratio to direct and to LiteLLM (same run)."""
    background = background_rates(runs, paths)
    paced_background = background_rates(runs, paths, "conversations")
    figures = {p.name: path_figures(p, runs[p.name], background, paced_background) for p in paths}
    direct = figures.get(DIRECT, {})
    for f in figures.values():
        f["overhead_ms"] = {
            q: _difference(_get(f, "probe", "ttft_ms", q), _get(direct, "probe", "ttft_ms", q))
            for q in (50, 95, 99)
        }
        if "paced" in f and "paced" in direct:
            f["paced"]["later_than_direct_ms"] = {
                q: f["paced"]["first_text_ms"][q] - direct["paced"]["first_text_ms"][q]
                for q in (50, 99)
            }
        if "conversations" in f and "conversations" in direct:
            conversations.against_direct(f["conversations"], direct["conversations"])
    headline: dict[str, dict[str, Any]] = {}
    for key, label, read in HEADLINE:
        values = {name: read(f) for name, f in figures.items()}
        headline[key] = {
            "label": label.format(
                c=config.get("concurrency", "?"), n=config.get("paced_conversations", "?")
            ),
            "values": values,
            "to_direct": {n: ratio(v, values.get(DIRECT)) for n, v in values.items()},
            "to_litellm": {n: ratio(v, values.get(LITELLM)) for n, v in values.items()},
        }
    order = {
        f"round {r + 1}": round_order([p.name for p in paths], r)
        for r in range(int(config.get("rounds", 1)))
    }
    return {
        "config": config,
        "order": order,
        "background_cpu_s_per_s": background,
        "paced_background_cpu_s_per_s": paced_background,
        "paths": figures,
        "headline": headline,
        "notes": [
            note
            for note in (conversations.saturation_note(direct.get("conversations", {})),)
            if note
        ],
    }


def _cell(value: float | None, digits: int = 1) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _ratio_cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def markdown(report: dict[str, Any]) -> str:
    """Two markdown tables: the absolute figures, then the ratios (to direct / to LiteLLM)."""
    names = list(report["paths"])
    labels = [report["paths"][n]["label"] for n in names]
    lines = [
        "| figure | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(names),
    ]
    # A phase the run skipped leaves its rows empty: they are left out.
    rows = [
        row
        for row in report["headline"].values()
        if any(v is not None for v in row["values"].values())
    ]
    for row in rows:
        lines.append(
            f"| {row['label']} | " + " | ".join(_cell(row["values"][n]) for n in names) + " |"
        )
    lines += [
        "",
        "Ratios in the same run, to direct / to LiteLLM (below 1 is better for every figure"
        " but requests/s, turns and turns/s):",
        "",
        "| figure | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(names),
    ]
    for row in rows:
        cells = [
            f"{_ratio_cell(row['to_direct'][n])} / {_ratio_cell(row['to_litellm'][n])}"
            for n in names
        ]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    lines += [f"\nNote: {note}." for note in report.get("notes", [])]
    if report.get("stream_memory"):
        lines += ["", *stream_memory_lines(report["stream_memory"])]
    return "\n".join(lines)


def write(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """`bench.json`, `bench.md` and `bench.png` in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path, png_path = (
        out_dir / "bench.json",
        out_dir / "bench.md",
        out_dir / "bench.png",
    )
    json_path.write_text(json.dumps(report, indent=2, default=float))
    order = "; ".join(f"{k}: {', '.join(v)}" for k, v in report["order"].items())
    md_path.write_text(
        f"# Benchmark run\n\nConfig: `{json.dumps(report['config'])}`\n\nOrder: {order}\n\n"
        + markdown(report)
        + "\n"
    )
    _plot(report, png_path)
    return [json_path, md_path, png_path]


def _plot(report: dict[str, Any], png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [
        k
        for k in (
            "overhead_p50_ms",
            "overhead_p99_ms",
            "cpu_ms",
            "rps",
            "paced_overhead_p99_ms",
            "paced_gap_p99_ms",
            "paced_cpu_ms",
            "first_text_p50_ms",
        )
        if any(v is not None for v in report["headline"][k]["values"].values())
    ]
    columns = 4
    rows = max(1, -(-len(keys) // columns))
    fig, grid = plt.subplots(rows, columns, figsize=(4 * columns, 4 * rows), squeeze=False)
    axes = [ax for row in grid for ax in row]
    for ax in axes[len(keys) :]:
        ax.axis("off")
    names = list(report["paths"])
    for ax, key in zip(axes, keys, strict=False):
        row = report["headline"][key]
        values = [row["values"][n] or 0.0 for n in names]
        ax.bar([report["paths"][n]["label"] for n in names], values, color="C0")
        title = row["label"].strip()
        if key.startswith("paced_") and key != "paced_turns":
            title = f"paced: {title}"
        ax.set_title(title, fontsize="small")
        ax.tick_params(axis="x", labelrotation=30, labelsize="small")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
