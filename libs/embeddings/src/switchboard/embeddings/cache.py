"""A bounded cache of query embeddings in front of any Embedder."""

import asyncio

import numpy as np
from cachetools import TTLCache

from switchboard.embeddings.base import Embedder, Vectors


class QueryEmbeddings:
    """Embeds one short text at a time (a user's question), remembering recent ones: a
    contact center hears the same questions all day. Bounded by entries (least recently
    used dropped first) and by age. Callers that ask for the same text while it is being
    embedded share that one computation (the orchestrator's retrieval and injection check
    embed the same message side by side). Not thread-safe: use from one event loop.

    Texts that differ only in case and spacing share an entry, unless `case_sensitive`
    (a cased model, whose vector of "Ignore" is not that of "ignore")."""

    def __init__(
        self, embedder: Embedder, max_entries: int, ttl_s: float, *, case_sensitive: bool = False
    ) -> None:
        self.embedder = embedder
        self._case_sensitive = case_sensitive
        self._cache: TTLCache[str, Vectors] | None = (
            TTLCache(maxsize=max_entries, ttl=ttl_s) if max_entries > 0 else None
        )
        self.hits = 0
        self.misses = 0
        # Texts being embedded now, by key; bounded by the callers waiting on them.
        self._pending: dict[str, asyncio.Future[Vectors]] = {}

    async def embed(self, text: str) -> Vectors:
        """The unit-length vector of `text` (1-D, read-only)."""
        key = text if self._case_sensitive else " ".join(text.split()).lower()
        if self._cache is not None:
            cached = self._cache.get(key)
            if cached is not None:
                self.hits += 1
                return cached
        pending = self._pending.get(key)
        if pending is not None:
            self.hits += 1
        else:
            self.misses += 1
            pending = asyncio.ensure_future(self._embed(key))
            self._pending[key] = pending
            pending.add_done_callback(lambda done: self._settled(key, done))
        # Shielded: a caller that gives up does not cancel the others' computation.
        return await asyncio.shield(pending)

    async def _embed(self, key: str) -> Vectors:
        vector = (await self.embedder.embed([key]))[0]
        vector = np.array(vector, dtype=np.float32)
        vector.setflags(write=False)
        if self._cache is not None:
            self._cache[key] = vector
        return vector

    def _settled(self, key: str, done: "asyncio.Future[Vectors]") -> None:
        if self._pending.get(key) is done:
            del self._pending[key]
        if not done.cancelled():
            done.exception()  # seen here too: every caller may have given up
