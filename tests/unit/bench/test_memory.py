"""Memory figures: bytes per open stream, the soak's RSS per minute and growth, and the
tracemalloc hook's diff."""

import tracemalloc
from pathlib import Path

import pytest

from switchboard.bench import soak, streams, tracehook


def test_bytes_per_stream_is_the_slope_not_the_difference_from_zero() -> None:
    mib = 2**20
    levels = [
        (0, {"gateway": 100 * mib, "worker": 150 * mib}),
        # The first streams cost a one-off 5 MiB (pools, imports) besides 20 KiB each.
        (200, {"gateway": 105 * mib + 200 * 20 * 1024, "worker": 150 * mib}),
        (400, {"gateway": 105 * mib + 400 * 20 * 1024, "worker": 150 * mib}),
    ]
    figures = streams.per_stream(levels)
    # Fitted over the levels with streams open: the one-off cost is left out.
    assert figures["gateway"]["bytes_per_stream"] == pytest.approx(20 * 1024)
    assert figures["worker"]["bytes_per_stream"] == pytest.approx(0.0)
    assert figures["gateway"]["rss_mb"][0] == pytest.approx(100.0)


def test_slope_is_exact_on_a_line_and_none_without_spread() -> None:
    assert streams.slope([(0, 1.0), (10, 21.0), (20, 41.0)]) == pytest.approx(2.0)
    assert streams.slope([(5, 1.0), (5, 2.0)]) is None
    assert streams.slope([(5, 1.0)]) is None


def test_the_stream_steps_end_at_the_total() -> None:
    assert streams.steps(400, 2) == [200, 400]
    assert streams.steps(3, 5) == [1, 2, 3]
    assert streams.steps(1, 2) == [1]


def test_the_stream_summary_names_each_process() -> None:
    figures = {
        "open_levels": [0, 2],
        "failures": [],
        "processes": streams.per_stream([(0, {"gateway": 0.0}), (2, {"gateway": 4096.0})]),
    }
    lines = streams.stream_memory_lines(figures)
    assert "| gateway | 0.0 / 0.0 | 2.0 |" in lines
    # With one level open the slope is taken from no stream.
    assert figures["processes"]["gateway"]["bytes_per_stream"] == pytest.approx(2048.0)


def test_rss_per_minute_takes_the_last_sample_of_each_minute() -> None:
    series = [(0.0, 100.0), (30.0, 110.0), (59.5, 120.0), (61.0, 121.0), (150.0, 125.0)]
    assert soak.per_minute(series) == [100.0, 120.0, 121.0, 125.0]
    assert soak.per_minute([]) == []
    assert soak.at(series, 60.0) == 120.0
    assert soak.at(series, -1.0) is None


def test_growth_is_fitted_after_the_warm_up_only() -> None:
    # 100 MB/min while warming up for 120 s, then flat.
    series = [(float(t), min(t, 120) * 100 / 60) for t in range(0, 600, 10)]
    flat = soak.growth(series, warmup_s=120)
    assert flat["mb_per_minute"] == pytest.approx(0.0, abs=1e-9)
    assert flat["rss_warm_mb"] == pytest.approx(200.0)
    rising = soak.growth([(float(t), t / 60) for t in range(0, 600, 10)], warmup_s=120)
    assert rising["mb_per_minute"] == pytest.approx(1.0)


def test_soak_memory_covers_services_and_servers() -> None:
    report = {
        "services": {"gateway": {"rss_series": [(0.0, 1.0), (200.0, 1.0)]}},
        "infrastructure": {"kafka": {"rss_series": [(0.0, 5.0), (200.0, 5.0)]}},
    }
    memory = soak.memory_figures(report, warmup_s=100)
    assert set(memory) == {"gateway", "kafka"}
    assert any(line.startswith("gateway") for line in soak.lines(memory, 100))


def test_the_trace_diff_names_the_site_that_grew(tmp_path: Path) -> None:
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start(1)
    try:
        tracemalloc.take_snapshot().dump(str(tracehook.snapshot_path(tmp_path, "svc", 1)))
        kept = [bytearray(10_000) for _ in range(100)]  # about 1 MB, allocated on this line
        tracemalloc.take_snapshot().dump(str(tracehook.snapshot_path(tmp_path, "svc", 2)))
    finally:
        if not was_tracing:
            tracemalloc.stop()
    found = soak.traced_growth(tmp_path, ["svc", "absent"])
    assert set(found) == {"svc"}
    top = found["svc"]["top_growth"][0]
    assert top["kib"] > 900
    assert top["where"][-1].startswith(__file__)
    assert len(kept) == 100
