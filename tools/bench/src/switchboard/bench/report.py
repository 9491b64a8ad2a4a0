"""Figures, the printed table, the JSON file and the PNG plot of a benchmark run."""

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from switchboard.bench.guardrails import lines as guardrail_lines
from switchboard.bench.load import LoadResult
from switchboard.bench.procstats import ProcessStats

# shared/ARCHITECTURE.md, "Performance budget".

# The name of the benchmark's own process among the infrastructure figures.
LOAD_DRIVER = "load driver (this process)"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), interpolated; NaN for no values."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def summarize(result: LoadResult) -> dict[str, Any]:
    """The headline figures of one load."""
    ok = [s for s in result.samples if s.outcome == "ok" and s.ttft_s is not None]
    ttft_ms = sorted((s.ttft_s or 0.0) * 1000 for s in ok)
    tokens = sum(s.output_tokens for s in ok)
    outcomes: dict[str, int] = {}
    for sample in result.samples:
        outcomes[sample.outcome] = outcomes.get(sample.outcome, 0) + 1
    return {
        "requests": len(result.samples),
        "outcomes": outcomes,
        "wall_s": result.wall_s,
        "requests_per_s": len(ok) / result.wall_s if result.wall_s else 0.0,
        "tokens": tokens,
        "tokens_per_s": tokens / result.wall_s if result.wall_s else 0.0,
        "ttft_ms": {q: percentile(ttft_ms, q) for q in (50, 95, 99)},
        "ttft_ms_all": ttft_ms,
    }


def _process_figures(stats: ProcessStats, completed: int) -> dict[str, Any]:
    return {
        "cpu_s": stats.cpu_s,
        "cpu_s_per_request": stats.cpu_s / completed,
        "rss_start_mb": stats.rss_start_mb,
        "rss_end_mb": stats.rss_end_mb,
        "rss_peak_mb": stats.rss_peak_mb,
        "rss_series": stats.rss_series,
    }


@dataclass(frozen=True)
class HttpPath:
    """The platform load through the HTTP door: its samples, its processes, its probe."""

    load: LoadResult
    processes: dict[str, ProcessStats]
    probe: LoadResult | None = None


def _http_figures(
    http: HttpPath, direct: dict[str, Any], probe_direct: LoadResult | None
) -> dict[str, Any]:
    """The HTTP path's figures, as the gRPC path's: TTFT, overhead over direct, CPU/request."""
    h = summarize(http.load)
    completed = max(1, sum(n for k, n in h["outcomes"].items() if k == "ok"))
    services = {name: _process_figures(stats, completed) for name, stats in http.processes.items()}
    figures: dict[str, Any] = {
        "load": h,
        "ttft_overhead_ms": {q: h["ttft_ms"][q] - direct["ttft_ms"][q] for q in (50, 95, 99)},
        "platform_cpu_s_per_request": sum(
            v["cpu_s"] for k, v in services.items() if k != "simulator"
        )
        / completed,
        "services": services,
        "unloaded": None,
    }
    if http.probe is not None and probe_direct is not None:
        hp, dp = summarize(http.probe), summarize(probe_direct)
        figures["unloaded"] = {
            "http_ttft_ms": hp["ttft_ms"],
            "ttft_overhead_ms": {q: hp["ttft_ms"][q] - dp["ttft_ms"][q] for q in (50, 95, 99)},
            "requests": hp["requests"],
        }
    return figures


def build_report(
    config: dict[str, Any],
    platform: LoadResult,
    direct: LoadResult,
    processes: dict[str, ProcessStats],
    probe: tuple[LoadResult, LoadResult] | None = None,
    infrastructure: dict[str, ProcessStats] | None = None,
    http: HttpPath | None = None,
) -> dict[str, Any]:
    """Everything a run measured, as one JSON-able document; `probe` is the same load one
    request at a time (platform, direct); `infrastructure` the shared servers (Kafka,
    FerretDB, Redis, Jaeger) and the load driver, over the platform load."""
    p, d = summarize(platform), summarize(direct)
    overhead = {q: p["ttft_ms"][q] - d["ttft_ms"][q] for q in (50, 95, 99)}
    unloaded = None
    if probe is not None:
        pp, pd = summarize(probe[0]), summarize(probe[1])
        unloaded = {
            "platform_ttft_ms": pp["ttft_ms"],
            "direct_ttft_ms": pd["ttft_ms"],
            "ttft_overhead_ms": {q: pp["ttft_ms"][q] - pd["ttft_ms"][q] for q in (50, 95, 99)},
            "requests": pp["requests"],
        }
    completed = max(1, sum(n for k, n in p["outcomes"].items() if k == "ok"))
    services = {name: _process_figures(stats, completed) for name, stats in processes.items()}
    shared = {
        name: _process_figures(stats, completed) for name, stats in (infrastructure or {}).items()
    }
    platform_cpu = sum(v["cpu_s"] for k, v in services.items() if k != "simulator")
    return {
        "config": config,
        "platform": p,
        "direct": d,
        "http": _http_figures(http, d, probe[1] if probe else None) if http else None,
        "ttft_overhead_ms": overhead,
        "unloaded": unloaded,
        "platform_cpu_s_per_request": platform_cpu / completed,
        "infrastructure_cpu_s_per_request": sum(
            v["cpu_s"] for k, v in shared.items() if k != LOAD_DRIVER
        )
        / completed,
        "services": services,
        "infrastructure": shared,
    }


def table(report: dict[str, Any]) -> str:
    """A plain-text summary."""
    p, d, o = report["platform"], report["direct"], report["ttft_overhead_ms"]
    lines = [
        f"{'':28}{'platform':>12}{'direct':>12}{'overhead':>12}",
        *(
            f"{'time to first token p' + str(q) + ' (ms)':28}{p['ttft_ms'][q]:12.2f}"
            f"{d['ttft_ms'][q]:12.2f}{o[q]:12.2f}"
            for q in (50, 95, 99)
        ),
        f"{'tokens per second':28}{p['tokens_per_s']:12.0f}{d['tokens_per_s']:12.0f}",
        f"{'requests per second':28}{p['requests_per_s']:12.1f}{d['requests_per_s']:12.1f}",
        f"{'requests (outcomes)':28}{p['requests']:12d}{d['requests']:12d}"
        f"   platform {p['outcomes']}  direct {d['outcomes']}",
        f"platform CPU seconds per request (all services but the simulator): "
        f"{report['platform_cpu_s_per_request'] * 1000:.2f} ms",
        f"infrastructure CPU seconds per request (Kafka, FerretDB, Redis, Jaeger): "
        f"{report.get('infrastructure_cpu_s_per_request', 0.0) * 1000:.2f} ms",
        "",
        f"{'process':28}{'CPU s':>8}{'CPU ms/req':>12}"
        f"{'RSS start':>11}{'RSS end':>9}{'peak MB':>9}",
    ]
    for name, s in [*report["services"].items(), *report.get("infrastructure", {}).items()]:
        lines.append(
            f"{name[:28]:28}{s['cpu_s']:8.1f}{s['cpu_s_per_request'] * 1000:12.2f}"
            f"{s['rss_start_mb']:11.1f}{s['rss_end_mb']:9.1f}{s['rss_peak_mb']:9.1f}"
        )
    unloaded = report.get("unloaded")
    if unloaded:
        lines += [
            "",
            f"one request at a time ({unloaded['requests']} requests): time to first token",
            *(
                f"{'  p' + str(q) + ' (ms)':28}{unloaded['platform_ttft_ms'][q]:12.2f}"
                f"{unloaded['direct_ttft_ms'][q]:12.2f}{unloaded['ttft_overhead_ms'][q]:12.2f}"
                for q in (50, 95, 99)
            ),
        ]
    http = report.get("http")
    if http:
        h, ho = http["load"], http["ttft_overhead_ms"]
        lines += [
            "",
            "the same load through the HTTP door (OpenAI SDK, streamed chat completions):",
            *(
                f"{'  p' + str(q) + ' TTFT (ms)':28}{h['ttft_ms'][q]:12.2f}"
                f"{d['ttft_ms'][q]:12.2f}{ho[q]:12.2f}"
                for q in (50, 95, 99)
            ),
            f"{'  tokens per second':28}{h['tokens_per_s']:12.0f}",
            f"{'  requests per second':28}{h['requests_per_s']:12.1f}",
            f"{'  requests (outcomes)':28}{h['requests']:12d}   {h['outcomes']}",
            f"  platform CPU per request (all services but the simulator): "
            f"{http['platform_cpu_s_per_request'] * 1000:.2f} ms",
        ]
        if http["unloaded"]:
            hu = http["unloaded"]
            lines += [
                f"  one request at a time ({hu['requests']} requests): TTFT overhead "
                + ", ".join(f"p{q} {hu['ttft_overhead_ms'][q]:.2f} ms" for q in (50, 95, 99)),
            ]
    if min(report["ttft_overhead_ms"].values()) < 0:
        lines += [
            "",
            "note: a negative overhead means the direct baseline queued longer than the platform"
            " (the load driver's own SDK parsing saturates first); compare one request at a time.",
        ]
    if report.get("guardrails"):
        lines += ["", *guardrail_lines(report["guardrails"])]
    return "\n".join(lines)


def write(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write `bench.json` and `bench.png` into `out_dir`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out_dir / "bench.json", out_dir / "bench.png"
    json_path.write_text(json.dumps(report, indent=2, default=float))

    fig, (ttft_ax, mem_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in ("platform", "direct"):
        values = report[name]["ttft_ms_all"]
        if values:
            ys = [(i + 1) / len(values) for i in range(len(values))]
            ttft_ax.plot(values, ys, label=f"{name} (p50 {report[name]['ttft_ms'][50]:.1f} ms)")
    ttft_ax.set_xscale("log")
    ttft_ax.set_xlabel("time to first token (ms, log)")
    ttft_ax.set_ylabel("share of requests")
    ttft_ax.set_title("Time to first token: through Switchboard vs direct")
    ttft_ax.legend()
    ttft_ax.grid(alpha=0.3)
    for name, stats in report["services"].items():
        series = stats["rss_series"]
        mem_ax.plot([t for t, _ in series], [m for _, m in series], label=name)
    mem_ax.set_xlabel("seconds into the run")
    mem_ax.set_ylabel("RSS (MB)")
    mem_ax.set_title("Memory per process")
    mem_ax.legend(fontsize="small")
    mem_ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return json_path, png_path
