"""The benchmark's report: overheads, the one-at-a-time probe, targets."""

import pytest

from switchboard.bench.load import LoadResult, Sample
from switchboard.bench.procstats import ProcessStats
from switchboard.bench.report import build_report, table


def load(name: str, ttft_ms: list[float], tokens: int = 100) -> LoadResult:
    samples = [
        Sample(started=float(i), first_token=i + ms / 1000, finished=i + 0.5, output_tokens=tokens)
        for i, ms in enumerate(ttft_ms)
    ]
    return LoadResult(name, samples, started=0.0, finished=float(len(ttft_ms)))


def test_the_probe_shows_the_overhead_without_queueing_and_a_negative_overhead_is_explained() -> (
    None
):
    platform = load("platform", [900.0] * 10)
    direct = load("direct", [1000.0] * 10)  # the baseline queued longer
    probe = (load("platform", [24.0] * 5), load("direct", [2.0] * 5))
    report = build_report({}, platform, direct, {"gateway": ProcessStats(cpu_start_s=0)}, probe)

    assert report["ttft_overhead_ms"][50] == pytest.approx(-100.0)
    assert report["unloaded"]["ttft_overhead_ms"][50] == pytest.approx(22.0)
    assert report["unloaded"]["requests"] == 5
    text = table(report)
    assert "one request at a time (5 requests)" in text
    assert "negative overhead" in text


def test_without_a_probe_the_report_has_no_unloaded_figures() -> None:
    report = build_report({}, load("platform", [30.0]), load("direct", [10.0]), {})
    assert report["unloaded"] is None
    assert report["ttft_overhead_ms"][50] == pytest.approx(20.0)
    assert "one request at a time" not in table(report)
    assert "negative overhead" not in table(report)
