"""Offline evaluations: `make eval-router` and `make eval-guardrails`.

    python -m switchboard.orchestrator.evaluation router [--data tests/data]
    python -m switchboard.orchestrator.evaluation guardrails [--data tests/data]

Speeds are measured here, never asserted in tests.
"""

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from switchboard.common.redaction import ALL_KINDS, Kind, Redactor, StreamingRedactor
from switchboard.orchestrator.guardrails import InjectionDetector
from switchboard.orchestrator.router import CHEAP, FRONTIER, ComplexityClassifier

# Prices per million tokens (input, output) of the default catalogue's first model per tier
# (services/llm-worker settings); override with --prices.
DEFAULT_PRICES = {CHEAP: (0.15, 0.60), FRONTIER: (3.0, 15.0)}
# A contact-center turn: system prompt and history on top of the message, a short answer.
PROMPT_OVERHEAD_TOKENS = 600
ANSWER_TOKENS = 250


def _load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _per_message_us(fn: Callable[[str], object], texts: Sequence[str], rounds: int = 20) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        for text in texts:
            fn(text)
    return (time.perf_counter() - start) / (rounds * len(texts)) * 1e6


def _cost(tier: str, text: str, prices: dict[str, tuple[float, float]]) -> float:
    input_tokens = PROMPT_OVERHEAD_TOKENS + len(text) / 4
    price_in, price_out = prices[tier]
    return (input_tokens * price_in + ANSWER_TOKENS * price_out) / 1_000_000


def evaluate_router(data: Path, prices: dict[str, tuple[float, float]]) -> int:
    """Print the router's figures per split; returns a process exit code."""
    rows = _load(data / "router_eval.jsonl")
    classifier = ComplexityClassifier()
    threshold = classifier.config.threshold
    print(f"router evaluation on {len(rows)} labelled messages ({data / 'router_eval.jsonl'})")
    for split in [*sorted({r["split"] for r in rows}), "all"]:
        subset = [r for r in rows if split in ("all", r["split"])]
        routed = [
            FRONTIER
            if classifier.classify(r["text"], r.get("history", [])).score >= threshold
            else CHEAP
            for r in subset
        ]
        complex_rows = [i for i, r in enumerate(subset) if r["expected"] == FRONTIER]
        simple_rows = [i for i, r in enumerate(subset) if r["expected"] == CHEAP]
        recall = sum(routed[i] == FRONTIER for i in complex_rows) / max(1, len(complex_rows))
        simple_cheap = sum(routed[i] == CHEAP for i in simple_rows) / max(1, len(simple_rows))
        cheap_share = routed.count(CHEAP) / len(subset)
        accuracy = sum(t == r["expected"] for t, r in zip(routed, subset, strict=True)) / len(
            subset
        )
        routed_cost = sum(_cost(t, r["text"], prices) for t, r in zip(routed, subset, strict=True))
        frontier_cost = sum(_cost(FRONTIER, r["text"], prices) for r in subset)
        print(
            f"  {split:8s} n={len(subset):3d}  routed to cheap {cheap_share:6.1%}  "
            f"recall of complex {recall:6.1%}  simple kept cheap {simple_cheap:6.1%}  "
            f"accuracy {accuracy:6.1%}  est. cost {routed_cost:.4f} USD vs all-frontier "
            f"{frontier_cost:.4f} USD ({routed_cost / frontier_cost:6.1%})"
        )
        if split == "all":
            misses = [
                (r["id"], r["expected"], t)
                for t, r in zip(routed, subset, strict=True)
                if t != r["expected"]
            ]
            for row_id, expected, got in misses:
                print(f"    miss {row_id}: expected {expected}, routed {got}")
    texts = [r["text"] for r in rows]
    speed = _per_message_us(lambda t: classifier.classify(t), texts)
    print(f"  classifier speed: {speed:.1f} µs per message (mean over {len(texts)} x 20)")
    return 0


def evaluate_guardrails(data: Path) -> int:
    """Print detection and false-positive rates of the guardrail suites."""
    detector = InjectionDetector()
    threshold = 0.5
    attacks = _load(data / "injection_attacks.jsonl")
    benign = _load(data / "benign_lookalikes.jsonl")
    caught = [a for a in attacks if detector.score(a["text"]).score >= threshold]
    flagged = [b for b in benign if detector.score(b["text"]).score >= threshold]
    print(f"prompt injection (threshold {threshold}):")
    print(f"  detection rate      {len(caught) / len(attacks):6.1%} ({len(caught)}/{len(attacks)})")
    by_category: dict[str, list[bool]] = {}
    for a in attacks:
        hit = detector.score(a["text"]).score >= threshold
        by_category.setdefault(a["category"], []).append(hit)
        by_category.setdefault(f"lang:{a['language']}", []).append(hit)
    for name, hits in sorted(by_category.items()):
        print(f"    {name:14s} {sum(hits)}/{len(hits)}")
    for a in attacks:
        if a not in caught:
            print(f"    missed {a['id']}: {a['text'][:70]!r}")
    print(f"  false-positive rate {len(flagged) / len(benign):6.1%} ({len(flagged)}/{len(benign)})")
    for b in flagged:
        verdict = detector.score(b["text"])
        print(f"    flagged {b['id']}: {b['text'][:60]!r} {verdict.score} {verdict.signals}")

    redactor = Redactor()
    cases = _load(data / "pii_cases.jsonl")
    positives = [c for c in cases if c["kinds"]]
    negatives = [c for c in cases if not c["kinds"]]
    detected = 0
    for case in positives:
        found = {f.kind.value for f in redactor.find(case["text"], ALL_KINDS)}
        if set(case["kinds"]) <= found:
            detected += 1
        else:
            print(f"    PII missed {case['id']}: {case['text']!r} found {sorted(found)}")
    false_positives = 0
    for case in negatives:
        found_kinds: list[Kind] = [f.kind for f in redactor.find(case["text"], ALL_KINDS)]
        if found_kinds:
            false_positives += 1
            print(f"    PII false positive {case['id']}: {case['text']!r} {found_kinds}")
    print("PII and secrets:")
    print(f"  detection rate      {detected / len(positives):6.1%} ({detected}/{len(positives)})")
    print(
        f"  false-positive rate {false_positives / len(negatives):6.1%} "
        f"({false_positives}/{len(negatives)})"
    )
    texts = [c["text"] for c in attacks + benign]
    print(f"  injection scoring: {_per_message_us(detector.score, texts, 5):.1f} µs per message")
    pii_texts = [c["text"] for c in cases]
    print(f"  redaction: {_per_message_us(redactor.redact, pii_texts, 5):.1f} µs per message")
    # Streaming redaction as the worker runs it: once per relayed chunk of a few tokens.
    prose = " ".join(b["text"] for b in benign)
    chunks = re.findall(r"(?:\s*\S+){1,4}", prose)
    start = time.perf_counter()
    for _ in range(5):
        stream = StreamingRedactor(redactor)
        for chunk in chunks:
            stream.push(chunk)
        stream.flush()
    per_chunk = (time.perf_counter() - start) / (5 * len(chunks)) * 1e6
    print(f"  streaming redaction: {per_chunk:.1f} µs per relayed chunk of up to 4 tokens")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m switchboard.orchestrator.evaluation")
    parser.add_argument("suite", choices=["router", "guardrails"])
    parser.add_argument("--data", type=Path, default=Path("tests/data"))
    parser.add_argument(
        "--prices",
        type=json.loads,
        default=None,
        help='per-tier [input, output] USD per 1M tokens, e.g. {"cheap": [0.15, 0.6], ...}',
    )
    args = parser.parse_args(argv)
    if args.suite == "router":
        prices = {k: tuple(v) for k, v in (args.prices or DEFAULT_PRICES).items()}
        return evaluate_router(args.data, prices)
    return evaluate_guardrails(args.data)


if __name__ == "__main__":
    sys.exit(main())
