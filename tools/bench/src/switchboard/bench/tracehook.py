"""`python -m switchboard.bench.tracehook MODULE`: run MODULE as `__main__` with tracemalloc
on; each SIGUSR2 writes a snapshot to `$SWITCHBOARD_BENCH_TRACE_DIR/<name>-<n>.snapshot`.

The soak (`--soak-trace`) starts the services through it, signals them at the end of the
warm-up and at the end, and reports the allocation sites that grew in between. A debug
hook of the harness, not of the services: they run unchanged. tracemalloc costs CPU and
memory of its own (reported beside the diff), so a traced soak's RSS is not the figure of an
untraced one.
"""

import os
import runpy
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType
from typing import Any

TRACE_DIR_ENV = "SWITCHBOARD_BENCH_TRACE_DIR"
TRACE_NAME_ENV = "SWITCHBOARD_BENCH_TRACE_NAME"
FRAMES_ENV = "SWITCHBOARD_BENCH_TRACE_FRAMES"


def snapshot_path(directory: Path, name: str, index: int) -> Path:
    return directory / f"{name}-{index}.snapshot"


def install(directory: Path, name: str) -> None:
    """Write a snapshot on every SIGUSR2 (in the main thread, between two bytecodes)."""
    count = 0

    def dump(signum: int, frame: FrameType | None) -> None:
        nonlocal count
        count += 1
        tracemalloc.take_snapshot().dump(str(snapshot_path(directory, name, count)))
        # What tracemalloc itself holds, beside the snapshot: its share of the RSS.
        overhead = snapshot_path(directory, name, count).with_suffix(".overhead")
        overhead.write_text(str(tracemalloc.get_tracemalloc_memory()))

    signal.signal(signal.SIGUSR2, dump)


def top_growth(before: Path, after: Path, limit: int = 10) -> list[dict[str, Any]]:
    """The allocation sites whose live bytes grew most between two snapshots."""
    old = tracemalloc.Snapshot.load(str(before))
    new = tracemalloc.Snapshot.load(str(after))
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    stats = new.filter_traces(ignore).compare_to(old.filter_traces(ignore), "traceback")
    return [
        {
            "kib": stat.size_diff / 1024,
            "count": stat.count_diff,
            "where": [f"{f.filename}:{f.lineno}" for f in stat.traceback],
        }
        for stat in stats[:limit]
    ]


def main() -> None:
    module = sys.argv[1]
    directory = Path(os.environ.get(TRACE_DIR_ENV, "."))
    directory.mkdir(parents=True, exist_ok=True)
    tracemalloc.start(int(os.environ.get(FRAMES_ENV, "6")))
    install(directory, os.environ.get(TRACE_NAME_ENV, module))
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
