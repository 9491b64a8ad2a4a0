"""The paced phase's figures: many conversations below saturation, the way a contact center
loads the platform (issue 18, must-have 2).

The simulator streams `CONVERSATION_TOKENS` tokens `CONVERSATION_TOKEN_DELAY_MS` apart; each
conversation sends its next message a think time after its last reply ended (load.Pacing).
Per path: TTFT, the gaps between content deltas, the turns completed and failed, the reply's
duration (against the nominal one: a path, or the load driver, that cannot keep up stretches
it) and CPU per turn. Against direct: TTFT overhead and the gap p99's excess.
"""

from typing import Any

from switchboard.bench.load import LoadResult, Pacing, Sample
from switchboard.bench.report import percentile

# The contact-center shape (Pacing's defaults; the LiteLLM config's paced model).
CONVERSATION_TOKEN_DELAY_MS = 30
CONVERSATION_TOKENS = 150
QUANTILES = (50, 95, 99)


def _ok(samples: list[Sample]) -> list[Sample]:
    return [s for s in samples if s.outcome == "ok" and s.ttft_s is not None]


def quantiles(values: list[float]) -> dict[int, float]:
    """p50/p95/p99 of `values` (NaN for none)."""
    ordered = sorted(values)
    return {q: percentile(ordered, q) for q in QUANTILES}


def phase_figures(results: list[LoadResult], pacing: Pacing | None) -> dict[str, Any]:
    """One path's paced figures, pooled over its rounds (CPU is added by the caller)."""
    samples = [s for r in results for s in r.samples]
    ok = _ok(samples)
    outcomes: dict[str, int] = {}
    for sample in samples:
        outcomes[sample.outcome] = outcomes.get(sample.outcome, 0) + 1
    gaps_ms = [g * 1000 for s in ok for g in (s.gaps_s or ())]
    durations = [s.finished - s.started for s in ok if s.finished is not None]
    wall = sum(r.wall_s for r in results)
    figures: dict[str, Any] = {
        "turns": len(samples),
        "turns_ok": len(ok),
        "errors": len(samples) - len(ok),
        "outcomes": outcomes,
        "wall_s": wall,
        "turns_per_s": len(ok) / wall if wall else 0.0,
        "ttft_ms": quantiles([(s.ttft_s or 0.0) * 1000 for s in ok]),
        "gap_ms": quantiles(gaps_ms),
        "gaps": len(gaps_ms),
        "reply_s": quantiles(durations),
    }
    if pacing is not None:
        figures["nominal_reply_s"] = pacing.nominal_reply_s
        figures["offered_turns_per_s"] = pacing.offered_turns_per_s()
    return figures


def against_direct(figures: dict[str, Any], direct: dict[str, Any]) -> None:
    """Add the overhead over direct's figures of the same run: TTFT per quantile, and how
    far the gap p99 exceeds direct's (differences of percentiles, as for the probe)."""
    figures["ttft_overhead_ms"] = {
        q: figures["ttft_ms"][q] - direct["ttft_ms"][q] for q in QUANTILES
    }
    figures["gap_p99_excess_ms"] = figures["gap_ms"][99] - direct["gap_ms"][99]


def saturation_note(direct: dict[str, Any]) -> str | None:
    """A sentence when even the direct path could not hold the simulator's pace: its replies
    took over 1.5x their nominal duration at p50 (then the load driver or the simulator,
    not a path, is the bottleneck). The turn rate is no test: the ramp and the last turns
    keep it under the offered rate in any finite phase."""
    reply = direct.get("reply_s", {}).get(50)
    nominal = direct.get("nominal_reply_s")
    if reply is None or not nominal or reply != reply or reply <= 1.5 * nominal:
        return None
    return (
        f"the paced schedule saturated even the direct path: its replies took {reply:.2f} s "
        f"at p50 (nominal {nominal:.2f} s)"
    )
