"""A bounded cache of query embeddings in front of any Embedder."""

import numpy as np
from cachetools import TTLCache

from switchboard.embeddings.base import Embedder, Vectors


class QueryEmbeddings:
    """Embeds one short text at a time (a user's question), remembering recent ones: a
    contact center hears the same questions all day. Bounded by entries (least recently
    used dropped first) and by age. Not thread-safe: use from one event loop."""

    def __init__(self, embedder: Embedder, max_entries: int, ttl_s: float) -> None:
        self.embedder = embedder
        self._cache: TTLCache[str, Vectors] | None = (
            TTLCache(maxsize=max_entries, ttl=ttl_s) if max_entries > 0 else None
        )
        self.hits = 0
        self.misses = 0

    async def embed(self, text: str) -> Vectors:
        """The unit-length vector of `text` (1-D, read-only)."""
        key = " ".join(text.split()).lower()
        if self._cache is not None:
            cached = self._cache.get(key)
            if cached is not None:
                self.hits += 1
                return cached
        self.misses += 1
        vector = (await self.embedder.embed([key]))[0]
        vector = np.array(vector, dtype=np.float32)
        vector.setflags(write=False)
        if self._cache is not None:
            self._cache[key] = vector
        return vector
