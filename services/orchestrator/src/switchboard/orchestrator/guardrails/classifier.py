"""A small learned check beside the rules: logistic regression over the message's sentence
embedding (Google's universal-sentence-encoder-multilingual v3, which reads sixteen languages
in their own scripts), its words and word pairs (hashed), the 3- to 5-letter pieces of its
words (hashed: German compounds, typos and inflections), its length and the rules' score.

The weights (512 + 2,048 + 4,096 + 4 numbers) are trained by `make train-guardrails` on the
dev split of tests/data only and committed as `injection_model.json` (its `version`, the
embedding model and a hash of the training rows are in the file). Scoring is a dot product
and a pass over the words and their letters (~1 µs a character): the cost is the embedding
(~2 ms, in the embedder's thread).

From version 5 (decision 0087) the model also remembers the dev split's vectors
(`injection_model.neighbours.npz`, float16): a message near known attacks and far from known
benign messages scores higher. The margin (mean cosine of the 5 nearest attacks minus that
of the 5 nearest benign rows, in the dev vectors' 128 principal directions) is two
matrix-vector products over ~7,200 rows of 128 numbers.

Models before version 4 read all-MiniLM-L6-v2's vectors, trained on English: for text in
other scripts those say little, so such a model abstains there (`reads`) and the rules
decide alone. Version 4 reads every script (decision 0086).
"""

import itertools
import json
import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from switchboard.orchestrator.guardrails._text import normalize

MODEL_PATH = Path(__file__).with_name("injection_model.json")
# The rules' score enters the model scaled, so that its weight is comparable to the
# embedding's (unit-length vectors of 384 small components).
RULES_SCALE = 4.0
# Share of letters that must be Latin for an English model's vectors to be trusted.
MIN_LATIN_SHARE = 0.6
# From this version on, the model's vectors are multilingual: it reads every script.
MULTILINGUAL_VERSION = 4

# Words and word pairs are hashed into this many buckets (the hashing trick: no vocabulary
# to keep, and words never seen in training fall into buckets of small weight).
WORD_BUCKETS = 2048
# The words' letter n-grams (3 to 5 letters, the word padded with a space each side) are
# hashed into this many buckets; absent from models before version 3.
CHAR_BUCKETS = 4096
CHAR_NGRAMS = (3, 4, 5)
# Messages of at most this many words get the "short" feature: everyday requests are short,
# so the model learns how much evidence a short message needs.
SHORT_WORDS = 6

_WORD = re.compile(r"[^\W\d_]+")
_LETTER = re.compile(r"[^\W\d_]")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")


@dataclass(frozen=True)
class InjectionModel:
    """Weights of the logistic regression and what they were trained for."""

    version: int
    embedding_model: str
    weights: NDArray[np.float32]  # one per embedding dimension
    rules_weight: float
    bias: float
    trained_on: str
    # One per hashed word bucket, and for (log(1 + words), short); absent in version 1.
    word_weights: NDArray[np.float32] | None = None
    shape_weights: tuple[float, float] = (0.0, 0.0)
    # One per hashed letter n-gram bucket; absent before version 3.
    char_weights: NDArray[np.float32] | None = None
    # Version 5: the nearest known examples. The verdict's logit is
    # logit_scale * (the regression's logit) + neighbour_weight * margin + neighbour_bias.
    neighbours: "Neighbours | None" = None
    logit_scale: float = 1.0
    neighbour_weight: float = 0.0
    neighbour_bias: float = 0.0

    @classmethod
    def load(cls, path: Path = MODEL_PATH) -> "InjectionModel":
        data = json.loads(path.read_text())
        combination = data.get("neighbours") or {}
        return cls(
            version=int(data["version"]),
            embedding_model=str(data["embedding_model"]),
            weights=np.asarray(data["weights"], dtype=np.float32),
            rules_weight=float(data["rules_weight"]),
            bias=float(data["bias"]),
            trained_on=str(data["trained_on"]),
            word_weights=(
                np.asarray(data["word_weights"], dtype=np.float32)
                if "word_weights" in data
                else None
            ),
            shape_weights=(
                float(data.get("shape_weights", [0.0, 0.0])[0]),
                float(data.get("shape_weights", [0.0, 0.0])[1]),
            ),
            char_weights=(
                np.asarray(data["char_weights"], dtype=np.float32)
                if "char_weights" in data
                else None
            ),
            neighbours=(
                Neighbours.load(neighbours_path(path), int(combination["k"]))
                if combination
                else None
            ),
            logit_scale=float(combination.get("logit_scale", 1.0)),
            neighbour_weight=float(combination.get("weight", 0.0)),
            neighbour_bias=float(combination.get("bias", 0.0)),
        )

    def save(self, path: Path, extra: dict[str, Any] | None = None) -> None:
        """Write the model as JSON to `path`, and its neighbours, if any, beside it."""
        if self.neighbours is not None:
            self.neighbours.save(neighbours_path(path))
        path.write_text(self.to_json(extra) + "\n")

    def to_json(self, extra: dict[str, Any] | None = None) -> str:
        return json.dumps(
            {
                "version": self.version,
                "embedding_model": self.embedding_model,
                "trained_on": self.trained_on,
                **(extra or {}),
                "rules_weight": round(self.rules_weight, 6),
                "bias": round(self.bias, 6),
                "shape_weights": [round(w, 6) for w in self.shape_weights],
                "weights": [round(float(w), 6) for w in self.weights],
                **(
                    {"word_weights": [round(float(w), 5) for w in self.word_weights]}
                    if self.word_weights is not None
                    else {}
                ),
                **(
                    {
                        "neighbours": {
                            "k": self.neighbours.k,
                            "logit_scale": round(self.logit_scale, 6),
                            "weight": round(self.neighbour_weight, 6),
                            "bias": round(self.neighbour_bias, 6),
                        }
                    }
                    if self.neighbours is not None
                    else {}
                ),
                **(
                    {"char_weights": [round(float(w), 5) for w in self.char_weights]}
                    if self.char_weights is not None
                    else {}
                ),
            },
            indent=1,
        )


def neighbours_path(model_path: Path) -> Path:
    """Where the neighbours of the model at `model_path` are kept (beside it)."""
    return model_path.with_name(f"{model_path.stem}.neighbours.npz")


@dataclass(frozen=True)
class Neighbours:
    """The dev split's sentence vectors, by label: the classifier's memory of examples. They
    are kept in the dev vectors' principal directions (`mean`, `projection`: 128 of 512
    dimensions gave the same leave-one-source-out figures on dev), so that a message reads
    a quarter of the bytes."""

    attacks: NDArray[np.float32]  # (rows, dims): projected, unit length
    benign: NDArray[np.float32]
    mean: NDArray[np.float32]  # (dimensions,)
    projection: NDArray[np.float32]  # (dimensions, dims)
    k: int  # how many nearest of each label the margin averages (the model file says)

    @classmethod
    def remember(
        cls,
        vectors: NDArray[np.floating[Any]],
        is_attack: NDArray[np.bool_],
        basis: tuple[NDArray[np.float32], NDArray[np.float32]],
        k: int,
    ) -> "Neighbours":
        """The memory of `vectors` by label, in `basis` (a `principal_basis`)."""
        mean, projection = basis
        projected = _project(vectors, mean, projection)
        return cls(projected[is_attack], projected[~is_attack], mean, projection, k)

    @classmethod
    def load(cls, path: Path, k: int) -> "Neighbours":
        with np.load(path) as data:
            return cls(
                np.asarray(data["attacks"], dtype=np.float32),
                np.asarray(data["benign"], dtype=np.float32),
                np.asarray(data["mean"], dtype=np.float32),
                np.asarray(data["projection"], dtype=np.float32),
                k,
            )

    def save(self, path: Path) -> None:
        # float16 halves the examples' bytes on disk; cosines move by ~1e-3.
        np.savez_compressed(
            path,
            attacks=self.attacks.astype(np.float16),
            benign=self.benign.astype(np.float16),
            mean=self.mean,
            projection=self.projection,
        )

    def margin(self, vectors: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
        """For each row of `vectors` (or one vector): the mean cosine of its k nearest
        attacks minus that of its k nearest benign examples."""
        batch = _project(vectors, self.mean, self.projection)
        return np.asarray(
            _top_mean(batch @ self.attacks.T, self.k) - _top_mean(batch @ self.benign.T, self.k),
            dtype=np.float64,
        )


def principal_basis(
    vectors: NDArray[np.floating[Any]], dims: int
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The mean of `vectors` and their first `dims` principal directions (as columns)."""
    matrix = np.asarray(vectors, dtype=np.float64)
    mean = matrix.mean(axis=0)
    _, _, directions = np.linalg.svd(matrix - mean, full_matrices=False)
    return mean.astype(np.float32), np.ascontiguousarray(directions[:dims].T, dtype=np.float32)


def _project(
    vectors: NDArray[np.floating[Any]], mean: NDArray[np.float32], projection: NDArray[np.float32]
) -> NDArray[np.float32]:
    """Rows of `vectors`, centred, projected and scaled to unit length."""
    batch = (np.atleast_2d(np.asarray(vectors, dtype=np.float32)) - mean) @ projection
    norms = np.linalg.norm(batch, axis=1, keepdims=True)
    return np.asarray(batch / np.maximum(norms, 1e-12), dtype=np.float32)


def _top_mean(similarities: NDArray[np.float32], k: int) -> NDArray[np.float32]:
    k = min(k, similarities.shape[1])
    top = np.partition(similarities, similarities.shape[1] - k, axis=1)[:, -k:]
    return np.asarray(top.mean(axis=1), dtype=np.float32)


def applies(text: str) -> bool:
    """Whether the text is mostly in Latin letters (what an English model can read)."""
    letters = _LETTER.findall(text)
    if not letters:
        return False
    return len(_LATIN.findall(text)) / len(letters) >= MIN_LATIN_SHARE


def words_of(text: str) -> list[str]:
    """The text's words, lower case, after NFKC (what both bucket kinds are built from)."""
    return _WORD.findall(normalize(text).lower())


def word_buckets(text: str, words: list[str] | None = None) -> list[int]:
    """The hashed buckets of the text's words and word pairs (lower case, NFKC), distinct.
    `words`: the text's `words_of`, when the caller has them already."""
    words = words_of(text) if words is None else words
    grams = [*words, *(f"{a} {b}" for a, b in itertools.pairwise(words))]
    return sorted({zlib.crc32(g.encode()) % WORD_BUCKETS for g in grams})


def char_buckets(text: str, words: list[str] | None = None) -> list[int]:
    """The hashed buckets of the 3- to 5-letter pieces of the text's words (lower case, NFKC,
    each word padded with a space each side, so that beginnings and ends count), distinct.
    `words`: the text's `words_of`, when the caller has them already."""
    crc = zlib.crc32
    grams: set[int] = set()
    for word in words_of(text) if words is None else words:
        padded = f" {word} "
        for n in CHAR_NGRAMS:
            grams.update(crc(padded[i : i + n].encode()) for i in range(len(padded) - n + 1))
    return sorted({g % CHAR_BUCKETS for g in grams})


def _binary_dot(weights: NDArray[np.float32], buckets: list[int]) -> float:
    """The dot product of `weights` with the unit-length binary vector of `buckets`."""
    return float(weights[buckets].sum()) / math.sqrt(len(buckets)) if buckets else 0.0


def shape(text: str) -> tuple[float, float]:
    """(log(1 + words), 1 when the message is short)."""
    words = len(text.split())
    return math.log1p(words), float(words <= SHORT_WORDS)


class InjectionClassifier:
    """P(injection) from a sentence vector and the rules' score."""

    def __init__(self, model: InjectionModel | None = None) -> None:
        self.model = model or InjectionModel.load()

    @property
    def embedding_model(self) -> str:
        """The embedding model whose vectors the weights expect."""
        return self.model.embedding_model

    def reads(self, text: str) -> bool:
        """Whether the model's vectors say something about `text` (else it abstains)."""
        return self.model.version >= MULTILINGUAL_VERSION or applies(text)

    def probability(self, vector: NDArray[np.float32], rules_score: float, text: str = "") -> float:
        """P(injection) of the message `text`, whose sentence vector is `vector`."""
        if vector.shape != self.model.weights.shape:
            raise ValueError(
                f"expected a {self.model.weights.shape[0]}-dimensional vector, got {vector.shape}"
            )
        z = (
            float(np.dot(self.model.weights, vector))
            + self.model.rules_weight * RULES_SCALE * rules_score
            + self.model.bias
        )
        if text:
            # The bucket vectors are binary and unit-length: their dot products are sums.
            words = words_of(text)
            if self.model.word_weights is not None:
                z += _binary_dot(self.model.word_weights, word_buckets(text, words))
            if self.model.char_weights is not None:
                z += _binary_dot(self.model.char_weights, char_buckets(text, words))
            length, short = shape(text)
            z += self.model.shape_weights[0] * length + self.model.shape_weights[1] * short
        if self.model.neighbours is not None:
            margin = float(self.model.neighbours.margin(vector)[0])
            z = (
                self.model.logit_scale * z
                + self.model.neighbour_weight * margin
                + self.model.neighbour_bias
            )
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))
