"""CPU seconds and memory of the platform's processes, sampled from the OS (psutil)."""

import asyncio
import time
from dataclasses import dataclass, field

import psutil


@dataclass
class ProcessStats:
    """One process over a run."""

    cpu_start_s: float
    cpu_end_s: float = 0.0
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_peak_mb: float = 0.0
    rss_series: list[tuple[float, float]] = field(default_factory=list)

    @property
    def cpu_s(self) -> float:
        return self.cpu_end_s - self.cpu_start_s


def _cpu(process: psutil.Process, children: bool = False) -> float:
    """User plus system CPU seconds of `process`, and with `children` of its live children
    too (a server that forks its workers is one path; the load driver, parent of every
    process it started, is not)."""
    total = 0.0
    members = [process, *process.children(recursive=True)] if children else [process]
    for member in members:
        try:
            times = member.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _rss_mb(process: psutil.Process) -> float:
    return float(process.memory_info().rss) / 2**20


class Sampler:
    """Samples each process's memory every `interval_s` while a load runs."""

    def __init__(
        self,
        pids: dict[str, int],
        interval_s: float = 0.5,
        with_children: frozenset[str] = frozenset(),
    ) -> None:
        """`with_children`: the names whose CPU includes their child processes'."""
        self._processes: dict[str, psutil.Process]
        self._with_children = with_children
        self._processes = {}
        for name, pid in pids.items():
            try:
                self._processes[name] = psutil.Process(pid)
            except psutil.NoSuchProcess:
                raise RuntimeError(f"{name} (pid {pid}) is not running") from None
        self._interval_s = interval_s
        self.stats: dict[str, ProcessStats] = {}
        self._task: asyncio.Task[None] | None = None
        self._t0 = 0.0

    def start(self) -> None:
        self._t0 = time.perf_counter()
        for name, process in self._processes.items():
            rss = _rss_mb(process)
            self.stats[name] = ProcessStats(
                cpu_start_s=_cpu(process, name in self._with_children),
                rss_start_mb=rss,
                rss_peak_mb=rss,
                rss_series=[(0.0, rss)],
            )
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            self._sample()

    def _sample(self) -> None:
        now = time.perf_counter() - self._t0
        for name, process in self._processes.items():
            try:
                rss = _rss_mb(process)
            except psutil.NoSuchProcess:
                continue
            stats = self.stats[name]
            stats.rss_peak_mb = max(stats.rss_peak_mb, rss)
            stats.rss_series.append((now, rss))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._sample()
        for name, process in self._processes.items():
            stats = self.stats[name]
            try:
                stats.cpu_end_s = _cpu(process, name in self._with_children)
                stats.rss_end_mb = _rss_mb(process)
            except psutil.NoSuchProcess:
                stats.cpu_end_s = stats.cpu_start_s


async def wait_until_idle(
    pids: dict[str, int],
    *,
    max_cores: float,
    window_s: float,
    timeout_s: float,
    with_children: frozenset[str] = frozenset(),
) -> tuple[float, float]:
    """Wait until `pids` together use at most `max_cores` CPU over one `window_s`, so that
    a phase does not start on the backlog a previous phase left (a queue still draining, a
    peer still answering requests its client gave up on). Returns the seconds waited and
    the cores used in the last window; gives up after `timeout_s` (the phase then runs on a
    busy machine, and the caller logs it)."""
    processes = {}
    for name, pid in pids.items():
        try:
            processes[name] = psutil.Process(pid)
        except psutil.NoSuchProcess:
            continue

    def total() -> float:
        return sum(_cpu(p, name in with_children) for name, p in processes.items())

    started = time.perf_counter()
    while True:
        before, t0 = total(), time.perf_counter()
        await asyncio.sleep(window_s)
        cores = (total() - before) / max(time.perf_counter() - t0, 1e-9)
        waited = time.perf_counter() - started
        if cores <= max_cores or waited >= timeout_s:
            return waited, cores
