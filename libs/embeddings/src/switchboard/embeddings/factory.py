"""Builds the configured Embedder."""

from switchboard.embeddings.base import Embedder
from switchboard.embeddings.local import LocalEmbedder
from switchboard.embeddings.remote import OpenAIEmbedder
from switchboard.embeddings.settings import EmbeddingSettings


def create_embedder(settings: EmbeddingSettings) -> Embedder:
    """The embedder `settings.provider` names, ready for its first query. The remote one
    learns its dimension on the first call (or from `openai_dimensions`): call `probe()`
    first where it is needed."""
    if settings.provider == "openai":
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        return OpenAIEmbedder(
            settings.openai_model,
            base_url=settings.openai_base_url,
            api_key=key,
            dimensions=settings.openai_dimensions,
            timeout_s=settings.openai_timeout_s,
            max_retries=settings.openai_max_retries,
            batch_size=settings.openai_batch_size,
        )
    local = local_embedder(settings)
    # ONNX Runtime builds its session on the first call (0.9 s here): at start-up, not on
    # the first turn after it.
    local.embed_sync(["warm-up"])
    return local


def local_embedder(settings: EmbeddingSettings | None = None) -> LocalEmbedder:
    """The local model as `settings` (by default the environment's) configure it: what the
    evaluations and benchmarks measure, so that they measure what the services run."""
    settings = settings or EmbeddingSettings()
    return LocalEmbedder(
        settings.local_model_dir,
        max_tokens=settings.local_max_tokens,
        batch_size=settings.local_batch_size,
        threads=settings.local_threads,
        blas_threads=settings.local_blas_threads,
        runtime=settings.local_runtime,
        weights=settings.local_weights,
    )
