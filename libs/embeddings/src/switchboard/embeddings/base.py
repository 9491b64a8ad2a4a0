"""The interface every embedding implementation offers."""

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

# One row per text, float32, each row of unit length (so a dot product is the cosine).
Vectors = NDArray[np.float32]


class EmbeddingError(RuntimeError):
    """An embedding could not be computed (the endpoint failed, or answered nonsense)."""


class Embedder(Protocol):
    """Turns texts into unit-length vectors of a fixed dimension."""

    @property
    def name(self) -> str:
        """The model's name, stored beside vectors so that a change of model is noticed."""
        ...

    @property
    def dimensions(self) -> int:
        """The length of every vector."""
        ...

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """One normalised row per text, in order; raises EmbeddingError."""
        ...

    async def close(self) -> None:
        """Release clients and threads."""
        ...


def normalise(vectors: NDArray[np.floating]) -> Vectors:
    """Rows scaled to unit length (a zero row stays zero)."""
    out = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    return np.ascontiguousarray(out / norms, dtype=np.float32)
