"""`make train-guardrails`: fit the injection classifier on the dev split of tests/data.

    python -m switchboard.orchestrator.guardrails.train [--data tests/data] [--out PATH]

Only rows whose split is "dev" are read: the held-out splits are never seen here. The
features and the regularisation were chosen by leave-one-source-out and 5-fold
cross-validation on dev (docs/decisions/0013); the decision point is then set
by leave-one-source-out cross-validation on dev, so that the tenant default threshold (0.5)
blocks at most `--max-benign-blocked` of dev's benign rows and at most
`--max-everyday-blocked` of its everyday customer requests (`everyday`). The verdict
combines the regression with the margin of the nearest dev examples (decision 0087). The
result is `injection_model.json` and `injection_model.neighbours.npz` beside the classifier,
committed with the code.
"""

import argparse
import hashlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from switchboard.common.redaction import ALL_KINDS, Redactor
from switchboard.embeddings.multilingual import MULTILINGUAL_MODEL, MultilingualEmbedder
from switchboard.orchestrator.guardrails.classifier import (
    CHAR_BUCKETS,
    MODEL_PATH,
    RULES_SCALE,
    WORD_BUCKETS,
    InjectionModel,
    Neighbours,
    char_buckets,
    neighbours_path,
    principal_basis,
    shape,
    word_buckets,
)
from switchboard.orchestrator.guardrails.injection import InjectionDetector

VERSION = 5  # multilingual vectors, and the nearest known examples (decision 0087)
L2 = 0.3
# The nearest examples' margin: how many neighbours, and its weight beside the regression
# (both in standard deviations of dev's benign rows; chosen by leave-one-source-out on dev).
NEIGHBOURS = 5
NEIGHBOUR_WEIGHT = 0.5
# The examples are compared in this many principal directions of the dev vectors (of 512).
NEIGHBOUR_DIMENSIONS = 128
THRESHOLD = 0.5  # the tenant default (GuardrailPolicy.injection_threshold)

F64 = NDArray[np.float64]


def fit(features: F64, labels: F64, l2: float, start: F64 | None = None) -> F64:
    """L2-regularised logistic regression with both classes weighted equally, by Newton's
    method, each step solved by conjugate gradients preconditioned with the Hessian's
    diagonal (hand-written: a few lines of numpy, where scikit-learn would be a new
    dependency for one fit; CG needs only products with the 6,500-column Hessian, never
    the matrix). The last column is the intercept (not regularised). `start` warm-starts
    the fits of cross-validation from the fit on all rows."""
    n, d = features.shape
    weights = np.zeros(d) if start is None else start.copy()
    positive = labels.mean()
    sample = np.where(labels == 1, 0.5 / positive, 0.5 / (1 - positive)) / n
    reg = np.full(d, l2 / n)
    reg[-1] = 0.0
    squares = features * features
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(features @ weights)))
        gradient = features.T @ (sample * (p - labels)) + reg * weights
        norm = float(np.linalg.norm(gradient))
        if norm < 1e-9:
            break
        curvature = sample * p * (1 - p)
        diagonal = squares.T @ curvature + reg + 1e-12
        # Solve Hessian @ step = gradient to a relative residual of min(0.1, sqrt(norm)):
        # inexact Newton, quadratic convergence near the optimum.
        step = np.zeros(d)
        residual = gradient.copy()
        z = residual / diagonal
        direction = z.copy()
        rz = float(residual @ z)
        for _ in range(500):
            product = features.T @ (curvature * (features @ direction)) + reg * direction
            alpha = rz / float(direction @ product)
            step += alpha * direction
            residual -= alpha * product
            if np.linalg.norm(residual) < min(0.1, np.sqrt(norm)) * norm:
                break
            z = residual / diagonal
            rz_next = float(residual @ z)
            direction = z + (rz_next / rz) * direction
            rz = rz_next
        weights -= step
    return weights


def hashed(texts: Sequence[str], buckets_of: Callable[[str], list[int]], size: int) -> F64:
    """The unit-length binary vectors of the texts' hashed buckets."""
    out = np.zeros((len(texts), size))
    for i, text in enumerate(texts):
        buckets = buckets_of(text)
        if buckets:
            out[i, buckets] = 1.0 / np.sqrt(len(buckets))
    return out


def design(vectors: F64, texts: Sequence[str], rules: F64) -> F64:
    """Columns: embedding, hashed words, hashed letter n-grams, rules, (log length, short),
    intercept."""
    shapes = np.array([shape(t) for t in texts], dtype=np.float64).reshape(len(texts), 2)
    return np.hstack(
        [
            vectors,
            hashed(texts, word_buckets, WORD_BUCKETS),
            hashed(texts, char_buckets, CHAR_BUCKETS),
            RULES_SCALE * rules[:, None],
            shapes,
            np.ones((len(rules), 1)),
        ]
    )


def everyday(row: dict[str, Any]) -> bool:
    """A benign everyday customer request (short questions, billing, "what did I just tell
    you?", assistant requests, the router's contact-center messages in seven languages): the
    messages that must never be blocked."""
    return row["label"] == "benign" and str(row["id"]).startswith(("cc3-b-", "clinc-", "router-"))


# Row ids of the project's own hand-written sets start with these (a-..., o-..., m-fr-...).
_PROJECT_PREFIXES = frozenset(
    {"a", "b", "c", "g", "m", "o", "p", "t", "bi", "ctl", "attack", "benign"}
)


def source_group(row: dict[str, Any]) -> str:
    """The source a row came from (deepset, CLINC150, NotInject, the router's messages, the
    project's own sets, ...), from its id's first part."""
    head = str(row["id"]).split("-", 1)[0]
    return "project" if head in _PROJECT_PREFIXES else head


def training_rows(data: Path) -> list[dict[str, Any]]:
    """The dev rows of every injection set (see evaluation.injection_rows)."""
    from switchboard.orchestrator.guardrails.evaluation import injection_rows

    return [r for r in injection_rows(data) if r["split"] == "dev"]


class SyncEmbedder(Protocol):
    """An embedder that can run in the calling thread (both local models can)."""

    def embed_sync(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


def embed_as_the_turn_does(embedder: SyncEmbedder, texts: Sequence[str]) -> F64:
    """The vectors of the texts as the orchestrator embeds them: after redaction."""
    redactor = Redactor()
    redacted = [redactor.redact(t, ALL_KINDS).text for t in texts]
    return np.asarray(embedder.embed_sync(redacted), dtype=np.float64)


def train(
    data: Path, out: Path, max_benign_blocked: float, max_everyday_blocked: float
) -> InjectionModel:
    rows = training_rows(data)
    texts = [r["text"] for r in rows]
    labels = np.array([r["label"] == "attack" for r in rows], dtype=np.float64)
    detector = InjectionDetector()
    rules = np.array([detector.score_rules(t).score for t in texts], dtype=np.float64)
    print(f"training on {len(rows)} dev rows ({int(labels.sum())} attacks); embedding them ...")
    vectors = embed_as_the_turn_does(MultilingualEmbedder(), texts)
    features = design(vectors, texts, rules)
    daily = np.array([everyday(r) for r in rows])

    # Probabilities on dev from models that never saw the row's source, to place the
    # decision point: what matters is a source nobody trained on (random folds put
    # near-copies of a row on both sides and promised 0.3% benign blocked on dev, then
    # blocked 5.6% of a new source's benign rows).
    groups = [source_group(r) for r in rows]
    names = sorted(set(groups))
    folds = np.array([names.index(g) for g in groups])
    logits = np.zeros(len(rows))
    margins = np.zeros(len(rows))
    everything = fit(features, labels, L2)
    attack = labels == 1
    # Unsupervised, so fitted once on every dev vector, labels unseen.
    basis = principal_basis(vectors, NEIGHBOUR_DIMENSIONS)
    for k in range(len(names)):
        inside = folds == k
        w = fit(features[~inside], labels[~inside], L2, everything)
        logits[inside] = features[inside] @ w
        memory = Neighbours.remember(vectors[~inside], attack[~inside], basis, NEIGHBOURS)
        margins[inside] = memory.margin(vectors[inside])
    print(f"leave-one-source-out over {len(names)} sources: {', '.join(names)}")
    benign = labels == 0
    # Both scores in standard deviations of dev's benign rows, then summed: the verdict's
    # logit is logit_scale * logit + neighbour_weight * margin + offset - cut.
    logit_scale = 1.0 / float(logits[benign].std())
    neighbour_weight = NEIGHBOUR_WEIGHT / float(margins[benign].std())
    offset = -(logit_scale * float(logits[benign].mean()))
    offset -= neighbour_weight * float(margins[benign].mean())
    combined = logit_scale * logits + neighbour_weight * margins + offset
    cut = float(combined.max())
    for candidate in np.quantile(combined[benign], np.linspace(0.8, 0.9999, 4000)):
        final = np.maximum(rules, combined >= candidate)
        blocked = (final[benign] >= THRESHOLD).mean()
        daily_blocked = (final[daily] >= THRESHOLD).mean() if daily.any() else 0.0
        cut = float(candidate)
        if blocked <= max_benign_blocked and daily_blocked <= max_everyday_blocked:
            break
    final = np.maximum(rules, combined >= cut)
    print(
        f"dev cross-validation at {cut:.3f} benign standard deviations: attacks caught "
        f"{(final[~benign] >= THRESHOLD).mean():.1%}, benign blocked "
        f"{(final[benign] >= THRESHOLD).mean():.2%}, everyday requests blocked "
        f"{int((final[daily] >= THRESHOLD).sum())}/{int(daily.sum())}"
    )

    w = everything
    dims = vectors.shape[1]
    neighbours = Neighbours.remember(vectors, attack, basis, NEIGHBOURS)
    digest = hashlib.sha256("\n".join(f"{r['id']}\t{r['label']}" for r in rows).encode())
    model = InjectionModel(
        version=VERSION,
        embedding_model=MULTILINGUAL_MODEL,
        weights=w[:dims].astype(np.float32),
        rules_weight=float(w[-4]),
        bias=float(w[-1]),
        word_weights=w[dims : dims + WORD_BUCKETS].astype(np.float32),
        char_weights=w[dims + WORD_BUCKETS : dims + WORD_BUCKETS + CHAR_BUCKETS].astype(np.float32),
        shape_weights=(float(w[-3]), float(w[-2])),
        trained_on=f"tests/data dev split: {len(rows)} rows, sha256 {digest.hexdigest()[:16]}",
        neighbours=neighbours,
        logit_scale=logit_scale,
        neighbour_weight=neighbour_weight,
        # Minus `cut`: 0.5, the tenant default, is the decision point.
        neighbour_bias=offset - cut,
    )

    model.save(
        out,
        {
            "l2": L2,
            "decision_point": round(cut, 4),
            "attacks": int(labels.sum()),
            "max_benign_blocked": max_benign_blocked,
            "max_everyday_blocked": max_everyday_blocked,
        },
    )
    print(f"wrote {out} and {neighbours_path(out).name}")
    return model


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m switchboard.orchestrator.guardrails.train")
    parser.add_argument("--data", type=Path, default=Path("tests/data"))
    parser.add_argument("--out", type=Path, default=MODEL_PATH)
    parser.add_argument(
        "--max-benign-blocked",
        type=float,
        default=0.03,
        help="share of dev's benign rows the default threshold may block (cross-validated)",
    )
    parser.add_argument(
        "--max-everyday-blocked",
        type=float,
        default=0.005,
        help="share of dev's everyday customer requests it may block (cross-validated)",
    )
    args = parser.parse_args(argv)
    train(args.data, args.out, args.max_benign_blocked, args.max_everyday_blocked)
    return 0


if __name__ == "__main__":
    sys.exit(main())
