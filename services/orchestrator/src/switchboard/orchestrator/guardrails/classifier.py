"""A small learned check beside the rules: logistic regression over the message's sentence
embedding (all-MiniLM-L6-v2, the vector the turn computes once for knowledge retrieval too)
and the rules' score.

The weights (384 + 2 numbers) are trained by `make train-guardrails` on the dev split of
tests/data only and committed as `injection_model.json` (its `version`, the embedding
model and a hash of the training rows are in the file). Scoring is one dot product: the
cost is the embedding, which the turn shares with retrieval.

MiniLM was trained on English: for text in other scripts its vectors say little, so the
classifier abstains there (`applies`) and the rules decide alone.
"""

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

MODEL_PATH = Path(__file__).with_name("injection_model.json")
# The rules' score enters the model scaled, so that its weight is comparable to the
# embedding's (unit-length vectors of 384 small components).
RULES_SCALE = 4.0
# Share of letters that must be Latin for the English model's vectors to be trusted.
MIN_LATIN_SHARE = 0.6

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

    @classmethod
    def load(cls, path: Path = MODEL_PATH) -> "InjectionModel":
        data = json.loads(path.read_text())
        return cls(
            version=int(data["version"]),
            embedding_model=str(data["embedding_model"]),
            weights=np.asarray(data["weights"], dtype=np.float32),
            rules_weight=float(data["rules_weight"]),
            bias=float(data["bias"]),
            trained_on=str(data["trained_on"]),
        )

    def to_json(self, extra: dict[str, Any] | None = None) -> str:
        return json.dumps(
            {
                "version": self.version,
                "embedding_model": self.embedding_model,
                "trained_on": self.trained_on,
                **(extra or {}),
                "rules_weight": round(self.rules_weight, 6),
                "bias": round(self.bias, 6),
                "weights": [round(float(w), 6) for w in self.weights],
            },
            indent=1,
        )


def applies(text: str) -> bool:
    """Whether the text is mostly in Latin letters (what the English model can read)."""
    letters = _LETTER.findall(text)
    if not letters:
        return False
    return len(_LATIN.findall(text)) / len(letters) >= MIN_LATIN_SHARE


class InjectionClassifier:
    """P(injection) from a sentence vector and the rules' score."""

    def __init__(self, model: InjectionModel | None = None) -> None:
        self.model = model or InjectionModel.load()

    @property
    def embedding_model(self) -> str:
        """The embedding model whose vectors the weights expect."""
        return self.model.embedding_model

    def probability(self, vector: NDArray[np.float32], rules_score: float) -> float:
        if vector.shape != self.model.weights.shape:
            raise ValueError(
                f"expected a {self.model.weights.shape[0]}-dimensional vector, got {vector.shape}"
            )
        z = (
            float(np.dot(self.model.weights, vector))
            + self.model.rules_weight * RULES_SCALE * rules_score
            + self.model.bias
        )
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))
