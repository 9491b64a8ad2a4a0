"""The soak's memory figures: RSS per process per minute, and its growth after the warm-up
(issue 18, must-have 4: every service flat after warm-up)."""

import contextlib
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from switchboard.bench.streams import slope
from switchboard.bench.tracehook import snapshot_path, top_growth

Series = Sequence[tuple[float, float]]


def at(series: Series, t: float) -> float | None:
    """The last sample taken at or before `t` seconds (None before the first)."""
    found = None
    for when, value in series:
        if when > t:
            break
        found = value
    return found


def per_minute(series: Series) -> list[float]:
    """RSS at the start, at the end of every whole minute, and at the end."""
    if not series:
        return []
    end = series[-1][0]
    values = [series[0][1]]
    minute = 60.0
    while minute < end:
        value = at(series, minute)
        if value is not None:
            values.append(value)
        minute += 60.0
    values.append(series[-1][1])
    return values


def growth(series: Series, warmup_s: float) -> dict[str, float | None]:
    """RSS at the warm-up's end and at the end, and the least-squares slope after the
    warm-up in MB per minute (a flat process is near 0)."""
    after = [(t, v) for t, v in series if t >= warmup_s]
    per_s = slope(after)
    return {
        "rss_warm_mb": at(series, warmup_s),
        "rss_end_mb": series[-1][1] if series else None,
        "mb_per_minute": None if per_s is None else per_s * 60,
    }


def memory_figures(report: dict[str, Any], warmup_s: float) -> dict[str, Any]:
    """Per process of a soak report (services and servers): RSS per minute and growth."""
    found: dict[str, Any] = {}
    for group in ("services", "infrastructure"):
        for name, stats in (report.get(group) or {}).items():
            series = stats["rss_series"]
            found[name] = {"per_minute_mb": per_minute(series), **growth(series, warmup_s)}
    return found


def lines(memory: dict[str, Any], warmup_s: float) -> list[str]:
    """The printed table: RSS after the warm-up, at the end, the slope, every minute."""
    out = [
        f"memory after a {warmup_s:.0f} s warm-up (RSS MB; the slope is fitted after it):",
        f"{'process':28}{'warm':>8}{'end':>8}{'MB/min':>8}  per minute",
    ]
    for name, m in memory.items():
        slope_cell = "—" if m["mb_per_minute"] is None else f"{m['mb_per_minute']:.2f}"
        warm = m["rss_warm_mb"] or 0.0
        out.append(
            f"{name[:28]:28}{warm:8.1f}{m['rss_end_mb'] or 0.0:8.1f}{slope_cell:>8}  "
            + " ".join(f"{v:.0f}" for v in m["per_minute_mb"])
        )
    return out


def signal_snapshots(pids: dict[str, int]) -> None:
    """Ask every traced service for a tracemalloc snapshot (bench.tracehook)."""
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGUSR2)


def traced_growth(directory: Path, names: Sequence[str]) -> dict[str, Any]:
    """Per traced service: the sites that grew from its first snapshot to its second, and
    what tracemalloc itself held at the end."""
    found: dict[str, Any] = {}
    for name in names:
        first, second = snapshot_path(directory, name, 1), snapshot_path(directory, name, 2)
        if not (first.exists() and second.exists()):
            continue
        overhead = second.with_suffix(".overhead")
        found[name] = {
            "tracemalloc_mb": int(overhead.read_text()) / 2**20 if overhead.exists() else None,
            "top_growth": top_growth(first, second),
        }
    return found
