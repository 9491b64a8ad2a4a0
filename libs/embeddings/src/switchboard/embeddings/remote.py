"""Any OpenAI-compatible `/v1/embeddings` endpoint, through the official SDK."""

import os
from collections.abc import Sequence

import numpy as np
import openai

from switchboard.embeddings.base import EmbeddingError, Vectors, normalise


class OpenAIEmbedder:
    """Embeds with `client.embeddings.create`, in batches; the SDK bounds each request by a
    timeout and retries with backoff a bounded number of times."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        dimensions: int | None = None,
        timeout_s: float = 10.0,
        max_retries: int = 2,
        batch_size: int = 128,
    ) -> None:
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            # The SDK refuses to start without a key; endpoints that need none accept any.
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "unused",
            timeout=timeout_s,
            max_retries=max_retries,
        )
        self._model = model
        self._dimensions = dimensions
        self._batch_size = batch_size
        self._known_dimensions = dimensions

    @property
    def name(self) -> str:
        return f"openai:{self._model}"

    @property
    def dimensions(self) -> int:
        if self._known_dimensions is None:
            raise EmbeddingError("the dimension is known after the first embed() call")
        return self._known_dimensions

    async def probe(self) -> int:
        """Embed one text to learn the dimension; returns it."""
        await self.embed(["dimension probe"])
        return self.dimensions

    async def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self._known_dimensions or 0), dtype=np.float32)
        rows: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            batch = list(texts[start : start + self._batch_size])
            try:
                if self._dimensions is None:
                    response = await self._client.embeddings.create(model=self._model, input=batch)
                else:
                    response = await self._client.embeddings.create(
                        model=self._model, input=batch, dimensions=self._dimensions
                    )
            except openai.OpenAIError as exc:
                raise EmbeddingError(f"embeddings endpoint failed: {exc}") from exc
            data = sorted(response.data, key=lambda d: d.index)
            if len(data) != len(batch):
                raise EmbeddingError(f"asked for {len(batch)} embeddings, got {len(data)}")
            rows.extend(list(d.embedding) for d in data)
        vectors = normalise(np.asarray(rows, dtype=np.float32))
        if vectors.ndim != 2:
            raise EmbeddingError("embeddings of different lengths")
        if self._known_dimensions is None:
            self._known_dimensions = int(vectors.shape[1])
        elif vectors.shape[1] != self._known_dimensions:
            raise EmbeddingError(
                f"expected {self._known_dimensions} dimensions, got {vectors.shape[1]}"
            )
        return vectors

    async def close(self) -> None:
        await self._client.close()
