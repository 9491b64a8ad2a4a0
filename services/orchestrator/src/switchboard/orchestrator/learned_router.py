"""The learned router: logistic regression over a sentence embedding and the rule signals.

A message (with the conversation's last user turns) is embedded by the bundled
all-MiniLM-L6-v2 (offline), the rule-based classifier's signals are added as features, and a
logistic regression gives the probability that the message needs the frontier tier. The
model is a JSON artifact (`router.json`, versioned, a few hundred kB, loads in milliseconds)
written by `make train-router`; it also carries the calibration curve (threshold -> recall of
complex messages and share routed cheap, from cross-validated scores) so that a tenant can ask
for a target recall or a target cheap share instead of a raw threshold.

The reason of every decision names its drivers: the features that pushed the score most
(a rule signal, or "message meaning" for the embedding as a whole) and the nearest labelled
examples. When the artifact is missing or broken the caller falls back to the rules
(`load_router`).
"""

import base64
import dataclasses
import hashlib
import json
import logging
import math
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from switchboard.embeddings.settings import WEIGHTS
from switchboard.orchestrator.router import Classifier, Complexity, ComplexityClassifier, Signal

log = logging.getLogger(__name__)

FORMAT = 1
DEFAULT_ARTIFACT = Path(__file__).parent / "models" / "router.json"

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]

# The rule classifier's signal names, each a 0/1 feature (order is part of the format).
RULE_SIGNALS = (
    "very long message",
    "long message",
    "detailed message",
    "several sentences",
    "several questions",
    "reasoning",
    "comparison",
    "calculation",
    "code or log excerpt",
    "troubleshooting already tried",
    "legal or financial stakes",
    "billing dispute",
    "several attempts described",
    "several figures",
    "earlier escalations or failures",
)
EXTRA_FEATURES = ("rule score", "length", "question marks", "follow-up")
EMBEDDING_FEATURE = "message meaning"
# Earlier user turns embedded with the message: a follow-up's difficulty is in its context.
HISTORY_TURNS = 2


class SentenceEncoder(Protocol):
    """What the router needs from switchboard.embeddings.local.BertEncoder."""

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 32,
        layers: int | None = None,
        max_tokens: int | None = None,
        weights: str = "float32",
    ) -> F32: ...


@dataclass(frozen=True)
class EmbeddingSpec:
    """Which vectors the model was trained on (they must be the same at run time)."""

    model: str
    layers: int | None
    max_tokens: int
    # "float32": as the model ships; "int8": the encoder's linear layers but the feed-forward
    # down projection in int8 (ONNX Runtime only); "int8-all": that one too, its outlier
    # input channels apart (about 3x faster than float32 for the router's one layer).
    weights: str = "float32"

    def encode_options(self) -> dict[str, Any]:
        """The encoder's keyword arguments for these vectors."""
        options: dict[str, Any] = {"layers": self.layers, "max_tokens": self.max_tokens}
        if self.weights != "float32":
            options["weights"] = self.weights
        return options


def embedding_text(message: str, history: Sequence[str]) -> str:
    """The message first (truncation cuts the oldest context), then the last user turns."""
    recent = [h for h in history[-HISTORY_TURNS:] if h.strip()]
    if not recent:
        return message
    return " | ".join([message, *reversed(recent)])


def rule_features(rules: ComplexityClassifier, message: str, history: Sequence[str]) -> F64:
    """The explainable features: the rule signals, the rule score, length and context."""
    verdict = rules.classify(message, history)
    names = {s.name for s in verdict.signals}
    flags = [1.0 if name in names else 0.0 for name in RULE_SIGNALS]
    extra = [
        verdict.score,
        math.log1p(len(message.split())),
        float(min(message.count("?"), 4)),
        1.0 if history else 0.0,
    ]
    return np.asarray(flags + extra, dtype=np.float64)


def feature_names() -> list[str]:
    """Names of the explainable features, in order (the embedding's dimensions follow)."""
    return [f"rule: {n}" for n in RULE_SIGNALS] + list(EXTRA_FEATURES)


def _b64(array: NDArray[Any]) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def _unb64(text: str, dtype: type[np.generic], shape: tuple[int, ...]) -> NDArray[Any]:
    return np.frombuffer(base64.b64decode(text), dtype=dtype).reshape(shape)


@dataclass(frozen=True)
class CurvePoint:
    """One operating point of the calibration curve (on cross-validated scores)."""

    threshold: float
    recall: float
    cheap_share: float


@dataclass(frozen=True)
class RouterModel:
    """A trained router: standardisation, weights, exemplars and the calibration curve."""

    version: str
    embedding: EmbeddingSpec
    mean: F64
    scale: F64
    weights: F64
    bias: float
    threshold: float
    curve: tuple[CurvePoint, ...]
    exemplar_vectors: NDArray[np.int8]  # unit vectors x 127, for the nearest examples
    exemplar_labels: tuple[str, ...]
    exemplar_texts: tuple[str, ...]
    trained_on: dict[str, Any]

    @property
    def n_rule_features(self) -> int:
        return len(RULE_SIGNALS) + len(EXTRA_FEATURES)

    def logit_parts(self, features: F64) -> F64:
        """Each feature's contribution to the logit (standardised value x weight)."""
        parts: F64 = (features - self.mean) / self.scale * self.weights
        return parts

    def probability(self, features: F64) -> float:
        z = float(self.logit_parts(features).sum()) + self.bias
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))

    def threshold_for(
        self, target_recall: float | None = None, target_cheap_share: float | None = None
    ) -> float:
        """The threshold of an operating point: the cheapest one that keeps `target_recall`
        of complex messages on frontier, or the one that routes about `target_cheap_share`
        cheap; the trained default when neither is given."""
        if target_recall is not None:
            ok = [p for p in self.curve if p.recall >= target_recall]
            return max(p.threshold for p in ok) if ok else min(p.threshold for p in self.curve)
        if target_cheap_share is not None:
            ok = [p for p in self.curve if p.cheap_share <= target_cheap_share]
            return max(p.threshold for p in ok) if ok else min(p.threshold for p in self.curve)
        return self.threshold

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": self.version,
            "embedding": {
                "model": self.embedding.model,
                "layers": self.embedding.layers,
                "max_tokens": self.embedding.max_tokens,
                "weights": self.embedding.weights,
            },
            "features": [*feature_names(), EMBEDDING_FEATURE],
            "mean": [round(float(v), 7) for v in self.mean],
            "scale": [round(float(v), 7) for v in self.scale],
            "weights": [round(float(v), 7) for v in self.weights],
            "bias": round(self.bias, 7),
            "threshold": self.threshold,
            "curve": [[p.threshold, p.recall, p.cheap_share] for p in self.curve],
            "exemplars": {
                "labels": list(self.exemplar_labels),
                "texts": list(self.exemplar_texts),
                "vectors_int8_b64": _b64(self.exemplar_vectors),
            },
            "trained_on": self.trained_on,
        }

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: Path) -> "RouterModel":
        """Read an artifact; raises ValueError (or OSError) when it is unusable."""
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{path}: not a router artifact of format {FORMAT}")
        try:
            spec = data["embedding"]
            mean = np.asarray(data["mean"], dtype=np.float64)
            size = mean.shape[0]
            labels = tuple(str(v) for v in data["exemplars"]["labels"])
            model = cls(
                version=str(data["version"]),
                embedding=EmbeddingSpec(
                    str(spec["model"]),
                    spec["layers"],
                    int(spec["max_tokens"]),
                    str(spec.get("weights", "float32")),
                ),
                mean=mean,
                scale=np.asarray(data["scale"], dtype=np.float64),
                weights=np.asarray(data["weights"], dtype=np.float64),
                bias=float(data["bias"]),
                threshold=float(data["threshold"]),
                curve=tuple(CurvePoint(*map(float, p)) for p in data["curve"]),
                exemplar_vectors=_unb64(
                    data["exemplars"]["vectors_int8_b64"],
                    np.int8,
                    (len(labels), size - len(RULE_SIGNALS) - len(EXTRA_FEATURES)),
                ),
                exemplar_labels=labels,
                exemplar_texts=tuple(str(v) for v in data["exemplars"]["texts"]),
                trained_on=dict(data.get("trained_on", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: malformed router artifact ({exc})") from exc
        if model.embedding.weights not in WEIGHTS:
            raise ValueError(f"{path}: unknown embedding weights {model.embedding.weights!r}")
        if not (model.scale.shape == model.weights.shape == (size,)) or not model.curve:
            raise ValueError(f"{path}: inconsistent router artifact sizes")
        if not np.all(np.isfinite(model.weights)) or not np.all(model.scale > 0):
            raise ValueError(f"{path}: non-finite weights or scales")
        return model


def content_version(payload: bytes) -> str:
    """A short content hash, part of the artifact's version."""
    return hashlib.sha256(payload).hexdigest()[:12]


@dataclass(frozen=True)
class LearnedComplexity(Complexity):
    """A learned verdict: `score` is the probability of needing the frontier tier."""

    drivers: str = ""

    def explain(self, threshold: float) -> str:
        relation = "≥" if self.score >= threshold else "<"
        return f"learned p(complex) {self.score:.2f} {relation} {threshold:.2f} ({self.drivers})"


class LearnedClassifier:
    """Scores messages with a RouterModel; the same inputs always give the same verdict."""

    kind = "learned"

    def __init__(
        self,
        model: RouterModel,
        encoder: SentenceEncoder,
        rules: ComplexityClassifier | None = None,
        *,
        target_recall: float | None = None,
        target_cheap_share: float | None = None,
        nearest: int = 2,
    ) -> None:
        self.model = model
        self.encoder = encoder
        self.rules = rules or ComplexityClassifier()
        self.nearest = nearest
        self.threshold = model.threshold_for(target_recall, target_cheap_share)
        self._names = feature_names()
        # Converted once: per message it would cost more than the model itself.
        self._exemplars = model.exemplar_vectors.astype(np.float32) / np.float32(127.0)

    def threshold_for(
        self, target_recall: float | None = None, target_cheap_share: float | None = None
    ) -> float:
        """A tenant's operating point, or the service default."""
        if target_recall is None and target_cheap_share is None:
            return self.threshold
        return self.model.threshold_for(target_recall, target_cheap_share)

    def embed(self, message: str, history: Sequence[str] = ()) -> F32:
        vector: F32 = self.encoder.encode(
            [embedding_text(message, history)], **self.model.embedding.encode_options()
        )[0]
        return vector

    def classify(self, message: str, history: Sequence[str] = ()) -> LearnedComplexity:
        vector = self.embed(message, history)
        features = np.concatenate(
            [rule_features(self.rules, message, history), vector.astype(np.float64)]
        )
        parts = self.model.logit_parts(features)
        z = float(parts.sum()) + self.model.bias
        probability = 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))
        n_rules = self.model.n_rule_features
        named = [(self._names[i], float(parts[i])) for i in range(n_rules)]
        named.append((EMBEDDING_FEATURE, float(parts[n_rules:].sum())))
        top = sorted((p for p in named if abs(p[1]) >= 0.05), key=lambda p: -abs(p[1]))[:3]
        drivers = ", ".join(f"{name} {value:+.2f}" for name, value in top) or "no strong feature"
        near = self._nearest(vector)
        if near:
            drivers += "; nearest labelled: " + ", ".join(near)
        signals = tuple(Signal(name, round(value, 4)) for name, value in top)
        return LearnedComplexity(round(probability, 4), signals, drivers=drivers)

    def _nearest(self, vector: F32) -> list[str]:
        if self.nearest <= 0 or not self.model.exemplar_labels:
            return []
        sims = self._exemplars @ vector
        best = np.argsort(-sims, kind="stable")[: self.nearest]
        return [
            f"{self.model.exemplar_texts[i]!r} ({self.model.exemplar_labels[i]}, {sims[i]:.2f})"
            for i in best
        ]


def load_router(
    path: Path | None,
    encoder_factory: "EncoderFactory",
    rules: ComplexityClassifier,
    *,
    target_recall: float | None = None,
    target_cheap_share: float | None = None,
) -> LearnedClassifier | None:
    """The learned classifier, or None (the caller keeps the rules) when the artifact is
    missing, corrupt, or made for another embedding model; each case logs a warning."""
    from switchboard.orchestrator import metrics

    where = path or DEFAULT_ARTIFACT
    try:
        model = RouterModel.load(where)
        encoder, name = encoder_factory()
        if name != model.embedding.model:
            raise ValueError(f"trained on {model.embedding.model!r}, the encoder is {name!r}")
        if model.embedding.weights != "float32" and not hasattr(encoder, "session"):
            # The numpy encoder (ONNX Runtime not installed, or the runtime set to numpy) has
            # no int8 path: float32 vectors are within cosine ~0.9995 of the int8 ones.
            log.warning(
                "router model %s is for %s weights: scoring it with float32",
                where,
                model.embedding.weights,
            )
            model = dataclasses.replace(
                model, embedding=dataclasses.replace(model.embedding, weights="float32")
            )
        classifier = LearnedClassifier(
            model,
            encoder,
            rules,
            target_recall=target_recall,
            target_cheap_share=target_cheap_share,
        )
        classifier.classify("warm-up message")  # fail here, not on the first turn
    except FileNotFoundError:
        log.warning("router model %s not found: routing with the rules", where)
        metrics.ROUTER_MODEL_FALLBACKS.labels("missing").inc()
        metrics.ROUTER_MODEL_LOADED.set(0)
        return None
    except Exception as exc:  # any failure to load must leave routing working
        log.warning("router model %s unusable (%s): routing with the rules", where, exc)
        metrics.ROUTER_MODEL_FALLBACKS.labels("corrupt").inc()
        metrics.ROUTER_MODEL_LOADED.set(0)
        return None
    metrics.ROUTER_MODEL_LOADED.set(1)
    log.info(
        "router model %s loaded (version %s, default threshold %.2f)",
        where,
        model.version,
        classifier.threshold,
    )
    return classifier


class EncoderFactory(Protocol):
    """Builds the sentence encoder and returns it with its model name."""

    def __call__(self) -> tuple[SentenceEncoder, str]: ...


def bundled_encoder() -> tuple[SentenceEncoder, str]:
    """The bundled all-MiniLM-L6-v2 (offline)."""
    from threadpoolctl import threadpool_limits

    from switchboard.embeddings import EmbeddingSettings
    from switchboard.embeddings.local import BUNDLED_MODEL, local_encoder

    # Process-wide, as LocalEmbedder does: one BLAS thread is fastest for one short message
    # and does not fight the event loop on a 2-core machine.
    threadpool_limits(limits=1, user_api="blas")
    # The runtime the service's embeddings use (ONNX Runtime unless set to numpy): the same
    # vectors either way, in half the time on ONNX Runtime (issue 20: routing p99 <= 5 ms).
    return local_encoder(runtime=EmbeddingSettings().local_runtime), BUNDLED_MODEL


_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class TenantRouters:
    """The service's classifier, or a tenant's own artifact (`model_policy.router_model`,
    a file `<name>.json` in `directory`, written by `make train-router` from the base set
    plus that tenant's exported traffic). Tenant models are loaded on first use, share the
    default model's encoder, and are kept in a bounded LRU; a tenant model that cannot be
    used logs a warning once and routes with the default."""

    def __init__(self, default: Classifier, directory: Path | None, max_models: int = 32) -> None:
        self.default = default
        self.directory = directory
        self.max_models = max_models
        self._loaded: OrderedDict[str, Classifier] = OrderedDict()

    def for_tenant(self, name: str | None) -> Classifier:
        """The classifier for a tenant whose policy names `name` (None: the default)."""
        if not name or self.directory is None or not isinstance(self.default, LearnedClassifier):
            return self.default
        found = self._loaded.get(name)
        if found is not None:
            self._loaded.move_to_end(name)
            return found
        classifier = self._load(name, self.default)
        self._loaded[name] = classifier
        while len(self._loaded) > self.max_models:
            self._loaded.popitem(last=False)
        return classifier

    def _load(self, name: str, default: "LearnedClassifier") -> Classifier:
        from switchboard.orchestrator import metrics

        assert self.directory is not None
        try:
            if not _MODEL_NAME.fullmatch(name):
                raise ValueError("a model name is letters, digits, '_', '-' or '.'")
            model = RouterModel.load(self.directory / f"{name}.json")
            spec, base = model.embedding, default.model.embedding
            if spec.model != base.model or (spec.layers or 99) > (base.layers or 99):
                raise ValueError(f"its embedding {spec} is not the service's {base}")
            return LearnedClassifier(model, default.encoder, default.rules, nearest=default.nearest)
        except (OSError, ValueError) as exc:
            log.warning("tenant router model %r unusable (%s): using the default", name, exc)
            metrics.ROUTER_MODEL_FALLBACKS.labels("tenant").inc()
            return default
