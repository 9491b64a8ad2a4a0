"""Offline evaluations: `make eval-router` and `make eval-guardrails`.

    python -m switchboard.orchestrator.evaluation router [--data tests/data]
    python -m switchboard.orchestrator.evaluation guardrails [--data tests/data]

Speeds are measured here, never asserted in tests.
"""

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from switchboard.orchestrator.guardrails.evaluation import (
    evaluate_guardrails,
    injection_rows,
    load_jsonl,
)
from switchboard.orchestrator.learned_router import DEFAULT_ARTIFACT
from switchboard.orchestrator.router import CHEAP, FRONTIER, ComplexityClassifier

# Prices per million tokens (input, output) of the default catalogue's first model per tier
# (services/llm-worker settings); override with --prices.
DEFAULT_PRICES = {CHEAP: (0.15, 0.60), FRONTIER: (3.0, 15.0)}
# A contact-center turn: system prompt and history on top of the message, a short answer.
PROMPT_OVERHEAD_TOKENS = 600
ANSWER_TOKENS = 250
HOLDOUT_FILE = "router_holdout.jsonl"


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


def evaluate_rules(data: Path, prices: dict[str, tuple[float, float]]) -> None:
    """The rule-based classifier on the older set (per split) and on the held-out split."""
    rows = load_jsonl(data / "router_eval.jsonl")
    classifier = ComplexityClassifier()
    threshold = classifier.config.threshold
    print(f"rules (threshold {threshold}) on {data / 'router_eval.jsonl'} and the held-out split")
    held = [r for r in load_jsonl(data / HOLDOUT_FILE) if "text" in r]
    for split, subset in [
        *((s, [r for r in rows if r["split"] == s]) for s in sorted({r["split"] for r in rows})),
        ("held-out", held),
    ]:
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
        routed_cost = sum(_cost(t, r["text"], prices) for t, r in zip(routed, subset, strict=True))
        frontier_cost = sum(_cost(FRONTIER, r["text"], prices) for r in subset)
        print(
            f"  {split:8s} n={len(subset):3d}  routed to cheap {cheap_share:6.1%}  "
            f"recall of complex {recall:6.1%}  simple kept cheap {simple_cheap:6.1%}  "
            f"est. cost {routed_cost / frontier_cost:6.1%} of all-frontier"
        )
    texts = [r["text"] for r in rows]
    speed = _per_message_us(lambda t: classifier.classify(t), texts)
    print(f"  rules speed: {speed:.1f} µs per message (mean over {len(texts)} x 20)")


def _cost_share(
    scores: Iterable[float],
    texts: Sequence[str],
    threshold: float,
    prices: dict[str, tuple[float, float]],
) -> float:
    routed = sum(
        _cost(FRONTIER if p >= threshold else CHEAP, t, prices)
        for p, t in zip(scores, texts, strict=True)
    )
    return routed / max(1e-12, sum(_cost(FRONTIER, t, prices) for t in texts))


def evaluate_learned(
    data: Path, prices: dict[str, tuple[float, float]], model_path: Path, plot: Path | None
) -> int:
    """The learned router: the cost/quality curve on dev (5-fold cross-validated on the
    training pool) and on the held-out split, operating points, breakdowns and latency."""

    from switchboard.orchestrator import router_training as rt
    from switchboard.orchestrator.learned_router import (
        LearnedClassifier,
        RouterModel,
        bundled_encoder,
        embedding_text,
    )

    try:
        model = RouterModel.load(model_path)
    except (OSError, ValueError) as exc:
        print(f"learned router: no usable artifact at {model_path} ({exc}); run make train-router")
        return 1
    encoder, _ = bundled_encoder()
    params = model.trained_on
    pool = [e for name in rt.TRAIN_FILES for e in rt.load_examples(data / name)]
    holdout = rt.load_examples(data / HOLDOUT_FILE)
    held_texts = {" ".join(e.text.lower().split()) for e in holdout}
    pool = [e for e in pool if " ".join(e.text.lower().split()) not in held_texts]
    x, _ = rt.featurize(pool, encoder, model.embedding)
    y_dev = np.array([1.0 if e.complex else 0.0 for e in pool])
    dev = rt.out_of_fold(pool, x, y_dev, float(params.get("l2", rt.DEFAULT_L2)))
    held = rt.score(model, encoder, holdout)
    y_held = np.array([1.0 if e.complex else 0.0 for e in holdout])
    dev_texts = [e.text for e in pool]
    held_texts_list = [e.text for e in holdout]

    print(
        f"\nlearned router {model.version} ({model_path.name}, "
        f"{model_path.stat().st_size / 1024:.0f} kB; embedding {model.embedding.model}, "
        f"{model.embedding.layers} layer(s), {model.embedding.max_tokens} tokens)"
    )
    print(
        f"  dev = 5-fold cross-validated scores on the training pool (n={len(pool)}, "
        f"{int(y_dev.sum())} complex); held-out = {HOLDOUT_FILE} (n={len(holdout)}, "
        f"{int(y_held.sum())} complex), never trained or tuned on"
    )
    print("  threshold |  dev: cheap  recall  cost | held-out: cheap  recall  simple-cheap  cost")
    thresholds = [round(i * 0.05, 2) for i in range(21)]
    for t in thresholds:
        d = rt.figures(dev, y_dev, t)
        h = rt.figures(held, y_held, t)
        mark = "  <- default" if abs(t - model.threshold) < 1e-9 else ""
        print(
            f"     {t:4.2f}   |       {d.cheap_share:5.1%}  {d.recall:6.1%} "
            f"{_cost_share(dev, dev_texts, t, prices):5.1%} |"
            f"           {h.cheap_share:5.1%}  {h.recall:6.1%}  {h.simple_cheap:6.1%}"
            f"        {_cost_share(held, held_texts_list, t, prices):5.1%}{mark}"
        )
    print("  operating points (threshold calibrated on dev; cost: est. share of all-frontier)")
    points: list[tuple[str, float]] = [("default (artifact)", model.threshold)]
    points += [(f"target recall {r:.0%}", model.threshold_for(r, None)) for r in (0.9, 0.95, 0.99)]
    points += [(f"target cheap {c:.0%}", model.threshold_for(None, c)) for c in (0.5, 0.6)]
    for name, t in points:
        d = rt.figures(dev, y_dev, t)
        h = rt.figures(held, y_held, t)
        print(
            f"    {name:20s} threshold {t:4.2f}  dev recall {d.recall:6.1%} cheap "
            f"{d.cheap_share:5.1%} | held-out recall {h.recall:6.1%} simple cheap "
            f"{h.simple_cheap:6.1%} cheap {h.cheap_share:5.1%} cost "
            f"{_cost_share(held, held_texts_list, t, prices):5.1%}"
        )
    print(f"  held-out at the default threshold {model.threshold:.2f}, by group:")
    for key in ("kind", "language", "industry"):
        groups = sorted({e.meta.get(key, "?") for e in holdout})
        cells = []
        for g in groups:
            idx = [i for i, e in enumerate(holdout) if e.meta.get(key, "?") == g]
            right = sum((held[i] >= model.threshold) == (y_held[i] == 1) for i in idx)
            cells.append(f"{g} {right}/{len(idx)}")
        print(f"    {key:9s} " + ", ".join(cells))
    for i, e in enumerate(holdout):
        if (held[i] >= model.threshold) != (y_held[i] == 1):
            print(f"    miss {e.id}: expected {e.expected}, p={held[i]:.2f} {e.text[:70]!r}")

    classifier = LearnedClassifier(model, encoder)
    cases = [(e.text, e.history) for e in [*holdout, *pool]]
    for text, history in cases[:20]:  # warm-up
        classifier.classify(text, history)
    times, cpu = [], []
    for text, history in cases:
        start, start_cpu = time.perf_counter(), time.thread_time()
        classifier.classify(text, history)
        times.append(time.perf_counter() - start)
        cpu.append(time.thread_time() - start_cpu)
    p50, p99 = np.percentile(times, [50, 99]) * 1000
    c50, c99 = np.percentile(cpu, [50, 99]) * 1000
    print(
        f"  routing latency (embedding + rules + model + nearest examples, one thread, "
        f"{len(cases)} messages): wall p50 {p50:.2f} ms p99 {p99:.2f} ms; "
        f"CPU p50 {c50:.2f} ms p99 {c99:.2f} ms (wall minus CPU = waiting for a shared core)"
    )
    _embedding_per_query(
        [embedding_text(e.text, e.history) for e in holdout], model.embedding.max_tokens
    )
    start = time.perf_counter()
    RouterModel.load(model_path)
    print(f"  artifact load: {(time.perf_counter() - start) * 1000:.1f} ms")
    if plot is not None:
        _plot(plot, thresholds, dev, y_dev, held, y_held, model.threshold)
    return 0


def _embedding_per_query(texts: Sequence[str], router_tokens: int, rounds: int = 2) -> None:
    """One message's embedding on each runtime of the local model, the runtimes alternating
    round by round (a neighbour's burst then hits both): the router's variant and the full
    model (retrieval, the injection classifier)."""

    from switchboard.embeddings import EmbeddingError
    from switchboard.embeddings.local import BertEncoder, bundled_model_dir
    from switchboard.embeddings.onnx import OnnxBertEncoder
    from switchboard.embeddings.settings import WEIGHTS

    reference = BertEncoder(bundled_model_dir())
    encoders: dict[str, tuple[Any, dict[str, str]]] = {"numpy": (reference, {})}
    try:
        onnx_encoder = OnnxBertEncoder(reference)
        encoders["onnx"] = (onnx_encoder, {})
        for weights in WEIGHTS[1:]:  # ONNX Runtime, int8 weights
            encoders[weights] = (onnx_encoder, {"weights": weights})
    except EmbeddingError as exc:
        print(f"  (no ONNX Runtime: {exc})")
    variants = [
        (f"router variant (1 layer, {router_tokens} pieces)", 1, router_tokens),
        ("full model (6 layers, 256 pieces)", None, None),
    ]
    print(
        f"  embedding per query (one message, one thread, {len(texts)} messages x {rounds} "
        "rounds, runtimes alternating):"
    )
    for label, layers, tokens in variants:
        wall: dict[str, list[float]] = {name: [] for name in encoders}
        cpu: dict[str, list[float]] = {name: [] for name in encoders}
        for encoder, options in encoders.values():  # warm-up (and each session's build)
            encoder.encode(texts[:5], layers=layers, max_tokens=tokens, **options)
        for _ in range(rounds):
            for name, (encoder, options) in encoders.items():
                for text in texts:
                    start, start_cpu = time.perf_counter(), time.thread_time()
                    encoder.encode([text], layers=layers, max_tokens=tokens, **options)
                    wall[name].append(time.perf_counter() - start)
                    cpu[name].append(time.thread_time() - start_cpu)
        for name in encoders:
            w50, w99 = np.percentile(wall[name], [50, 99]) * 1000
            c50, c99 = np.percentile(cpu[name], [50, 99]) * 1000
            print(
                f"    {label:<36} {name:<8}  wall p50 {w50:5.2f} ms p99 {w99:5.2f} ms; "
                f"CPU p50 {c50:5.2f} ms p99 {c99:5.2f} ms"
            )


def _plot(
    path: Path,
    thresholds: Sequence[float],
    dev: Any,
    y_dev: Any,
    held: Any,
    y_held: Any,
    default: float,
) -> None:
    """The cost/quality curve as a PNG: recall of complex messages against the share
    routed cheap, one line per split, the default operating point marked."""
    from switchboard.orchestrator import router_training as rt

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("  (matplotlib is not installed: no plot)")
        return
    fine = [i / 100 for i in range(101)]
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=110)
    for name, scores, y in (("dev (5-fold CV)", dev, y_dev), ("held-out", held, y_held)):
        figs = [rt.figures(scores, y, t) for t in fine]
        ax.plot([f.cheap_share for f in figs], [f.recall for f in figs], label=name)
        point = rt.figures(scores, y, default)
        ax.scatter([point.cheap_share], [point.recall], marker="o")
    ax.set_xlabel("share of messages routed to the cheap model")
    ax.set_ylabel("recall of complex messages (sent to frontier)")
    ax.set_title(f"Learned router: cost/quality (default threshold {default:.2f})")
    ax.set_ylim(0.5, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    print(f"  curve plotted to {path}")


def evaluate_router(
    data: Path, prices: dict[str, tuple[float, float]], model_path: Path, plot: Path | None
) -> int:
    """Print the rules' and the learned router's figures; returns a process exit code."""
    evaluate_rules(data, prices)
    return evaluate_learned(data, prices, model_path, plot)


# The tenant default (GuardrailPolicy.injection_threshold).
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
    parser.add_argument("--model", type=Path, default=DEFAULT_ARTIFACT, help="router artifact")
    parser.add_argument(
        "--plot", type=Path, default=None, help="write the router's cost/quality curve (PNG)"
    )
    args = parser.parse_args(argv)
    if args.suite == "router":
        prices = {k: tuple(v) for k, v in (args.prices or DEFAULT_PRICES).items()}
        return evaluate_router(args.data, prices, args.model, args.plot)
    return evaluate_guardrails(args.data)


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["evaluate_guardrails", "evaluate_router", "injection_rows", "main"]
