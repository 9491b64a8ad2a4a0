"""`make train-router`: fit the learned router on tests/data and write its artifact.

    python -m switchboard.orchestrator.router_training [--data tests/data] [--out PATH]
        [--extra FILE ...] [--target-recall 0.97] [--layers 1] [--max-tokens 48]
        [--weights int8-all] [--force]

Training data: router_train.jsonl and router_eval.jsonl (every split), plus `--extra` files
(for example the labelled turns exported from a tenant's traffic; `--out DIR/<name>.json`
then makes that tenant's own router). router_holdout.jsonl is never trained or tuned on: it
is only scored, after the model is fixed, and a new artifact whose held-out recall of complex
messages is lower than the one it replaces (or the service's) is not written.

The fit is deterministic: features are computed in file order, folds are assigned from a hash
of each example's text, and the logistic regression is solved by Newton's method from zero.
Logistic regression is written here in numpy (a few lines) rather than taken from
scikit-learn, which would bring scipy into the orchestrator for one linear model.
"""

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from switchboard.embeddings.settings import WEIGHTS
from switchboard.orchestrator.learned_router import (
    DEFAULT_ARTIFACT,
    CurvePoint,
    EmbeddingSpec,
    RouterModel,
    SentenceEncoder,
    bundled_encoder,
    content_version,
    embedding_text,
    rule_features,
)
from switchboard.orchestrator.router import FRONTIER, ComplexityClassifier

F64 = NDArray[np.float64]

TRAIN_FILES = ("router_train.jsonl", "router_eval.jsonl")
HOLDOUT_FILE = "router_holdout.jsonl"
FOLDS = 5
# Chosen by 5-fold cross-validation on the training pool (never on the held-out split);
# docs/decisions/0060-learned-router.md has the comparison.
DEFAULT_LAYERS = 1
DEFAULT_MAX_TOKENS = 48
# The encoder's linear layers in int8, the down projection's outlier channels apart (issue
# 20: routing p99 <= 5 ms through the API; dev figures as float32's, decision 0060).
DEFAULT_WEIGHTS = "int8-all"
DEFAULT_L2 = 3.0
DEFAULT_TARGET_RECALL = 0.97
CURVE_STEPS = 100


@dataclass(frozen=True)
class Example:
    """One labelled message."""

    id: str
    text: str
    expected: str
    history: tuple[str, ...] = ()
    source: str = ""
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def complex(self) -> bool:
        return self.expected == FRONTIER


def load_examples(path: Path) -> list[Example]:
    """Labelled rows of a JSONL file (a `_header` row, if any, is skipped)."""
    rows: list[Example] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if "_header" in row:
            continue
        if row.get("expected") not in ("cheap", "frontier") or not str(row.get("text", "")):
            raise ValueError(f"{path}:{n}: needs 'text' and 'expected' of cheap or frontier")
        meta = {k: str(row[k]) for k in ("industry", "language", "kind", "split") if k in row}
        rows.append(
            Example(
                id=str(row.get("id", f"{path.stem}-{n}")),
                text=str(row["text"]),
                expected=str(row["expected"]),
                history=tuple(str(h) for h in row.get("history", [])),
                source=path.name,
                meta=meta,
            )
        )
    return rows


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def featurize(
    examples: Sequence[Example],
    encoder: SentenceEncoder,
    spec: EmbeddingSpec,
    rules: ComplexityClassifier | None = None,
) -> tuple[F64, NDArray[np.float32]]:
    """(features, embeddings): rule features then embedding dimensions, one row each."""
    rules = rules or ComplexityClassifier()
    vectors = encoder.encode(
        [embedding_text(e.text, e.history) for e in examples], **spec.encode_options()
    )
    explained = np.stack([rule_features(rules, e.text, e.history) for e in examples])
    return np.concatenate([explained, vectors.astype(np.float64)], axis=1), vectors


def fit_logistic(x: F64, y: F64, l2: float, iterations: int = 50) -> tuple[F64, float, F64, F64]:
    """(weights, bias, mean, scale) of an L2-regularised logistic regression on standardised
    features, by Newton's method (deterministic; converges in a few steps at this size)."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-6] = 1.0
    z = (x - mean) / scale
    n, d = z.shape
    design = np.concatenate([z, np.ones((n, 1))], axis=1)
    theta = np.zeros(d + 1)
    penalty = np.full(d + 1, l2)
    penalty[-1] = 0.0  # the bias is not shrunk
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ theta, -60, 60)))
        gradient = design.T @ (p - y) + penalty * theta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return theta[:-1], float(theta[-1]), mean, scale


def predict(x: F64, weights: F64, bias: float, mean: F64, scale: F64) -> F64:
    z = ((x - mean) / scale) @ weights + bias
    out: F64 = 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))
    return out


def fold_of(example: Example, folds: int = FOLDS) -> int:
    """A stable fold from the text (the same message always lands in the same fold)."""
    digest = hashlib.sha256(example.text.encode()).digest()
    return int.from_bytes(digest[:4], "big") % folds


def out_of_fold(examples: Sequence[Example], x: F64, y: F64, l2: float) -> F64:
    """Each example's score from a model that did not see it (5-fold cross-validation)."""
    folds = np.array([fold_of(e) for e in examples])
    scores = np.zeros(len(examples))
    for k in range(FOLDS):
        test = folds == k
        weights, bias, mean, scale = fit_logistic(x[~test], y[~test], l2)
        scores[test] = predict(x[test], weights, bias, mean, scale)
    return scores


def curve(scores: F64, y: F64, steps: int = CURVE_STEPS) -> tuple[CurvePoint, ...]:
    """Recall of complex messages and share routed cheap for thresholds 0..1."""
    complex_count = max(1.0, float(y.sum()))
    points = []
    for i in range(steps + 1):
        t = round(i / steps, 4)
        frontier = scores >= t
        points.append(
            CurvePoint(
                t,
                round(float((frontier & (y == 1)).sum()) / complex_count, 4),
                round(float((~frontier).mean()), 4),
            )
        )
    return tuple(points)


@dataclass(frozen=True)
class Figures:
    """A split's figures at one threshold."""

    n: int
    recall: float
    simple_cheap: float
    cheap_share: float

    def line(self) -> str:
        return (
            f"n={self.n:3d}  recall of complex {self.recall:6.1%}  "
            f"simple kept cheap {self.simple_cheap:6.1%}  routed cheap {self.cheap_share:6.1%}"
        )


def figures(scores: F64, y: F64, threshold: float) -> Figures:
    frontier = scores >= threshold
    return Figures(
        n=len(y),
        recall=float((frontier & (y == 1)).sum()) / max(1.0, float(y.sum())),
        simple_cheap=float((~frontier & (y == 0)).sum()) / max(1.0, float((y == 0).sum())),
        cheap_share=float((~frontier).mean()) if len(y) else 0.0,
    )


def exemplar_int8(vectors: NDArray[np.float32]) -> NDArray[np.int8]:
    out: NDArray[np.int8] = np.clip(np.rint(vectors * 127.0), -127, 127).astype(np.int8)
    return out


def train(
    examples: Sequence[Example],
    encoder: SentenceEncoder,
    spec: EmbeddingSpec,
    *,
    l2: float = DEFAULT_L2,
    target_recall: float = DEFAULT_TARGET_RECALL,
    trained_on: dict[str, Any] | None = None,
    exemplar_sources: Sequence[str] | None = None,
) -> tuple[RouterModel, F64]:
    """The fitted model (on every example) and the examples' cross-validated scores. Only
    examples from `exemplar_sources` (file names; all when None) are kept as the nearest
    examples a routing reason quotes: a tenant's exported traffic is learned from but never
    quoted, since reasons are stored with every tenant's turns."""
    x, vectors = featurize(examples, encoder, spec)
    y = np.array([1.0 if e.complex else 0.0 for e in examples])
    oof = out_of_fold(examples, x, y, l2)
    points = curve(oof, y)
    ok = [p.threshold for p in points if p.recall >= target_recall]
    threshold = max(ok) if ok else 0.0
    weights, bias, mean, scale = fit_logistic(x, y, l2)
    quotable = [
        i
        for i, e in enumerate(examples)
        if exemplar_sources is None or e.source in set(exemplar_sources)
    ]
    params: dict[str, Any] = {"l2": l2, "target_recall": target_recall, "layers": spec.layers}
    if spec.weights != "float32":
        params["weights"] = spec.weights
    payload = json.dumps(
        [params, spec.max_tokens, [round(float(v), 6) for v in weights]], sort_keys=True
    ).encode()
    model = RouterModel(
        version=f"router-{content_version(payload)}",
        embedding=spec,
        mean=mean,
        scale=scale,
        weights=weights,
        bias=bias,
        threshold=threshold,
        curve=points,
        exemplar_vectors=exemplar_int8(vectors[quotable]),
        exemplar_labels=tuple(examples[i].expected for i in quotable),
        exemplar_texts=tuple(examples[i].text[:80] for i in quotable),
        trained_on={**(trained_on or {}), **params, "examples": len(examples)},
    )
    return model, oof


def score(model: RouterModel, encoder: SentenceEncoder, examples: Sequence[Example]) -> F64:
    """The model's probabilities for `examples` (batched; the same as classify() per row)."""
    x, _ = featurize(examples, encoder, model.embedding)
    out: F64 = predict(x, model.weights, model.bias, model.mean, model.scale)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m switchboard.orchestrator.router_training")
    parser.add_argument("--data", type=Path, default=Path("tests/data"))
    parser.add_argument("--out", type=Path, default=DEFAULT_ARTIFACT)
    parser.add_argument(
        "--extra", type=Path, action="append", default=[], help="more labelled JSONL files"
    )
    parser.add_argument("--target-recall", type=float, default=DEFAULT_TARGET_RECALL)
    parser.add_argument("--l2", type=float, default=DEFAULT_L2)
    parser.add_argument("--layers", type=int, default=DEFAULT_LAYERS)
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    parser.add_argument(
        "--weights",
        choices=WEIGHTS,
        default=DEFAULT_WEIGHTS,
        help="the encoder's linear layers in int8 (ONNX Runtime; faster: int8-all, all of them,"
        " int8, all but the feed-forward down projection) or float32",
    )
    parser.add_argument(
        "--force", action="store_true", help="write even if held-out recall got worse"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=DEFAULT_ARTIFACT,
        help="compared with when --out does not exist yet (a tenant's first model)",
    )
    args = parser.parse_args(argv)
    if not 0.5 <= args.target_recall <= 1.0:
        parser.error("--target-recall must be between 0.5 and 1")

    sources = [args.data / name for name in TRAIN_FILES] + list(args.extra)
    examples = [e for path in sources for e in load_examples(path)]
    holdout = load_examples(args.data / HOLDOUT_FILE)
    # A message that is also in the held-out split is dropped from training (the older
    # router_eval.jsonl shares a few common questions with it).
    held_texts = {" ".join(e.text.lower().split()) for e in holdout}
    dropped = [e.id for e in examples if " ".join(e.text.lower().split()) in held_texts]
    examples = [e for e in examples if e.id not in set(dropped)]
    if dropped:
        print(f"  left out {len(dropped)} training rows also in the held-out split: {dropped}")
    encoder, name = bundled_encoder()
    spec = EmbeddingSpec(name, args.layers, args.max_tokens, args.weights)
    trained_on = {
        "files": {p.name: file_digest(p)[:16] for p in sources},
        "trained_at": datetime.now(UTC).date().isoformat(),
    }
    model, oof = train(
        examples,
        encoder,
        spec,
        l2=args.l2,
        target_recall=args.target_recall,
        trained_on=trained_on,
        exemplar_sources=TRAIN_FILES,
    )
    y = np.array([1.0 if e.complex else 0.0 for e in examples])
    y_hold = np.array([1.0 if e.complex else 0.0 for e in holdout])
    held = score(model, encoder, holdout)
    print(f"trained {model.version} on {len(examples)} examples ({', '.join(map(str, sources))})")
    print(f"  threshold {model.threshold:.2f} (dev recall target {args.target_recall:.0%})")
    print(f"  dev (5-fold cross-validated)  {figures(oof, y, model.threshold).line()}")
    print(f"  held-out                      {figures(held, y_hold, model.threshold).line()}")

    # Compared with the artifact it replaces, or (a tenant's first one) the service's.
    current = args.out if args.out.exists() else args.baseline
    if current.exists() and not args.force:
        try:
            previous = RouterModel.load(current)
            before = figures(score(previous, encoder, holdout), y_hold, previous.threshold)
        except (OSError, ValueError) as exc:
            print(f"  the existing artifact is unusable ({exc}); replacing it")
        else:
            after = figures(held, y_hold, model.threshold)
            print(f"  held-out before ({previous.version}): {before.line()}")
            if after.recall < before.recall:
                print(
                    f"NOT written: held-out recall {after.recall:.1%} < {before.recall:.1%} "
                    "of the current artifact (--force overrides)",
                    file=sys.stderr,
                )
                return 1
    model.save(args.out)
    print(f"  wrote {args.out} ({args.out.stat().st_size / 1024:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
