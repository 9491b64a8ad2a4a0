"""The benchmark's report: overheads, the one-at-a-time probe, CPU per request."""

import pytest

from switchboard.bench.load import LoadResult, Sample
from switchboard.bench.procstats import ProcessStats
from switchboard.bench.report import LOAD_DRIVER, build_report, table


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


def test_infrastructure_cpu_is_reported_apart_from_the_services_and_the_load_driver() -> None:
    def cpu(seconds: float) -> ProcessStats:
        return ProcessStats(cpu_start_s=1.0, cpu_end_s=1.0 + seconds)

    report = build_report(
        {},
        load("platform", [30.0] * 10),
        load("direct", [10.0] * 10),
        {"gateway": cpu(0.2), "simulator": cpu(0.5)},
        infrastructure={"kafka": cpu(0.1), "ferretdb": cpu(0.3), LOAD_DRIVER: cpu(2.0)},
    )

    assert report["platform_cpu_s_per_request"] == pytest.approx(0.02)
    assert report["infrastructure_cpu_s_per_request"] == pytest.approx(0.04)
    text = table(report)
    assert "infrastructure CPU seconds per request (Kafka, FerretDB, Redis, Jaeger): 40.00 ms" in (
        text
    )
    assert "ferretdb" in text and LOAD_DRIVER[:28] in text


def test_the_guardrails_cost_per_turn_is_in_the_table() -> None:
    report = build_report({}, load("platform", [30.0]), load("direct", [10.0]), {})
    report["guardrails"] = {
        "per_turn_us": {50: 250.0, 99: 510.0},
        "embedding_us": {50: 9_200.0, 99: 13_300.0},
        "messages": 5,
    }
    text = table(report)
    assert "guardrails per turn" in text and "p50 0.250 ms, p99 0.510 ms" in text
    assert "p50 9.20 ms, p99 13.30 ms" in text
