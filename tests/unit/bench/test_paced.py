"""The paced phase: the conversations' schedule, the gaps between deltas, its figures and its
rows in the side-by-side report (fakes only: a virtual clock, no timing)."""

import asyncio

import pytest

from switchboard.bench.compare import (
    DIRECT,
    GRPC,
    PathSpec,
    Phase,
    PhaseRun,
    compare,
    markdown,
)
from switchboard.bench.conversations import against_direct, phase_figures, saturation_note
from switchboard.bench.load import GapRecorder, LoadResult, Pacing, Sample, drive_paced


def pacing(**changes: float) -> Pacing:
    shape = {
        "conversations": 4,
        "turns": 3,
        "think_s": 2.0,
        "ramp_s": 8.0,
        "duration_s": 1000.0,
        **changes,
    }
    return Pacing(**shape)  # type: ignore[arg-type]


def test_the_first_messages_spread_over_the_ramp_and_the_offered_rate_follows_the_pace() -> None:
    shape = pacing(tokens=150, token_delay_ms=30)
    assert [shape.start_offset(i) for i in range(4)] == [0.0, 2.0, 4.0, 6.0]
    assert shape.nominal_reply_s == pytest.approx(4.47)
    # 4 conversations, each a turn every 4.47 s of reply plus 2 s of thinking.
    assert shape.offered_turns_per_s() == pytest.approx(4 / 6.47)


async def test_each_conversation_waits_its_offset_then_thinks_between_its_turns() -> None:
    sleeps: list[float] = []
    sent: list[tuple[int, int]] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await asyncio.sleep(0)

    async def send(index: int, turn: int) -> Sample:
        sent.append((index, turn))
        return Sample(started=0.0, first_token=0.001, finished=1.0)

    result = await drive_paced("x", pacing(), send, clock=lambda: 0.0, sleep=sleep)

    assert sorted(sent) == [(i, t) for i in range(4) for t in range(3)]
    assert len(result.samples) == 12
    # One offset per conversation, then a think time between its turns (none after the last).
    assert sorted(sleeps) == sorted([0.0, 2.0, 4.0, 6.0] + [2.0] * 8)
    for index in range(4):
        turns = [t for i, t in sent if i == index]
        assert turns == [0, 1, 2]


async def test_no_turn_starts_after_the_phase_duration() -> None:
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    async def send(index: int, turn: int) -> Sample:
        now[0] += 4.0  # every reply takes 4 virtual seconds
        return Sample(started=0.0, first_token=0.001, finished=4.0)

    shape = pacing(conversations=1, turns=10, ramp_s=0.0, duration_s=13.0)
    result = await drive_paced("x", shape, send, clock=lambda: now[0], sleep=sleep)

    # Turns start at 0, 6 and 12 (4 s reply + 2 s think); the fourth would start at 18.
    assert len(result.samples) == 3
    assert result.wall_s == pytest.approx(16.0)


def test_the_gap_recorder_keeps_the_time_between_consecutive_deltas() -> None:
    times = iter([1.0, 1.03, 1.10, 1.13])
    sample = Sample(started=0.9)
    gaps = GapRecorder(sample, clock=lambda: next(times))
    first = gaps.delta()
    for _ in range(3):
        gaps.delta()
    assert first == 1.0
    assert sample.gaps_s == pytest.approx([0.03, 0.07, 0.03])


def _paced_result(
    ttft_ms: float, gap_ms: list[float], reply_s: float, errors: int = 0
) -> LoadResult:
    samples = [
        Sample(
            started=float(i),
            first_token=i + ttft_ms / 1000,
            finished=i + reply_s,
            gaps_s=[g / 1000 for g in gap_ms],
        )
        for i in range(10)
    ]
    for sample in samples[:errors]:
        sample.outcome = "status:UNAVAILABLE"
    return LoadResult("p", samples, started=0.0, finished=20.0)


def test_paced_figures_pool_the_gaps_and_count_failed_turns_apart() -> None:
    shape = pacing(conversations=10, turns=1, tokens=150, token_delay_ms=30)
    result = _paced_result(12.0, [30.0] * 98 + [90.0, 120.0], 4.6, errors=2)
    figures = phase_figures([result], shape)

    assert figures["turns"] == 10
    assert figures["turns_ok"] == 8
    assert figures["errors"] == 2
    assert figures["outcomes"] == {"ok": 8, "status:UNAVAILABLE": 2}
    assert figures["turns_per_s"] == pytest.approx(8 / 20.0)
    assert figures["ttft_ms"][50] == pytest.approx(12.0)
    assert figures["gaps"] == 800  # the failed turns' gaps are left out
    assert figures["gap_ms"][50] == pytest.approx(30.0)
    assert figures["gap_ms"][99] > 30.0
    assert figures["reply_s"][50] == pytest.approx(4.6)
    assert figures["offered_turns_per_s"] == pytest.approx(10 / 6.47)


def test_overheads_against_direct_are_differences_of_percentiles() -> None:
    direct = phase_figures([_paced_result(4.0, [30.0] * 100, 4.5)], None)
    path = phase_figures([_paced_result(40.0, [30.0] * 99 + [300.0], 4.6)], None)
    against_direct(path, direct)
    assert path["ttft_overhead_ms"][50] == pytest.approx(36.0)
    assert path["gap_p99_excess_ms"] == pytest.approx(path["gap_ms"][99] - 30.0)


def test_a_direct_path_that_cannot_hold_the_pace_is_called_saturated() -> None:
    shape = pacing(tokens=150, token_delay_ms=30)
    held = phase_figures([_paced_result(4.0, [30.0], 4.6)], shape)
    stretched = phase_figures([_paced_result(4.0, [30.0], 9.0)], shape)
    assert saturation_note(held) is None
    note = saturation_note(stretched)
    assert note is not None and "9.00 s" in note and "4.47 s" in note
    assert saturation_note({}) is None


def test_the_report_has_the_paced_rows_with_cpu_per_turn_less_the_servers_background() -> None:
    shape = pacing(conversations=10, turns=1)

    def runs(ttft_ms: float, gap_ms: float, cpu: dict[str, float]) -> dict[str, list[PhaseRun]]:
        result = _paced_result(ttft_ms, [gap_ms] * 10, 4.5)
        return {"conversations": [PhaseRun(0, 0, result, cpu, shape)]}

    paths = [
        PathSpec(DIRECT, _never),
        PathSpec(GRPC, _never, services=("gateway",), servers=("kafka",)),
    ]
    report = compare(
        paths,
        {
            # Kafka: 0.1 CPU s/s of other users over direct's 20 s.
            DIRECT: runs(4.0, 30.0, {"kafka": 2.0}),
            GRPC: runs(34.0, 45.0, {"gateway": 1.0, "kafka": 3.0}),
        },
        {"rounds": 1, "paced_conversations": 10},
    )
    grpc = report["paths"][GRPC]["conversations"]
    assert grpc["ttft_overhead_ms"][99] == pytest.approx(30.0)
    assert grpc["gap_p99_excess_ms"] == pytest.approx(15.0)
    # 1 s of gateway + (3 - 2) s of Kafka over 10 turns.
    assert grpc["cpu_ms_per_turn"]["path"] == pytest.approx(200.0)
    assert report["headline"]["paced_overhead_p99_ms"]["values"][GRPC] == pytest.approx(30.0)
    text = markdown(report)
    assert "| paced, 10 conversations: turns completed | 10.0 | 10.0 |" in text
    assert "one at a time" not in text  # phases the run skipped have no rows
    assert report["notes"] == []


def test_the_paced_phase_is_sampled_like_the_load() -> None:
    from switchboard.bench.compare import SAMPLED

    assert Phase("conversations", 1, 1, paced=False).name in SAMPLED
    assert "probe" not in SAMPLED and "paced" not in SAMPLED


async def _never(phase: Phase) -> LoadResult:
    raise AssertionError("not run")
