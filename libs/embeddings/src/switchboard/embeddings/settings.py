"""Embedding settings (`SWITCHBOARD_EMBEDDINGS_*`), shared by every service that embeds."""

from pathlib import Path
from typing import Literal, get_args

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# The local model's linear-layer weights: as shipped, or int8 (switchboard.embeddings.local).
Weights = Literal["float32", "int8", "int8-all"]
WEIGHTS: tuple[Weights, ...] = get_args(Weights)


class EmbeddingSettings(BaseSettings):
    """Which embedding model to use and how to reach it."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_EMBEDDINGS_")

    provider: Literal["local", "openai"] = Field(
        default="local",
        description="'local': the bundled all-MiniLM-L6-v2 on the CPU (offline); "
        "'openai': an OpenAI-compatible /v1/embeddings endpoint through the official SDK.",
    )
    local_model_dir: Path | None = Field(
        default=None,
        description="A sentence-transformers BERT directory (config.json, model.safetensors, "
        "tokenizer.json) to use instead of the bundled all-MiniLM-L6-v2.",
    )
    local_max_tokens: int = Field(
        default=256,
        gt=2,
        le=512,
        description="Word pieces per text the local model reads (the model was trained on 256); "
        "the rest of a longer text is ignored.",
    )
    local_runtime: Literal["onnx", "numpy"] = Field(
        default="onnx",
        description="What runs the local model: 'onnx' (ONNX Runtime on the CPU, about twice "
        "as fast per query) or 'numpy' (the reference; also used when ONNX Runtime is not "
        "installed). Both give the same vectors.",
    )
    local_weights: Weights = Field(
        default="int8-all",
        description="The local model's linear layers: 'float32' as the model ships, or int8 "
        "(ONNX Runtime only; 'int8-all' also quantizes the feed-forward down projection, its "
        "outlier channels apart): 2.1 against 5.6 ms per query here, vectors close to "
        "float32's (retrieval and injection evaluations unchanged, decision 0082). Vectors "
        "stored under one setting can be searched under another.",
    )
    local_batch_size: int = Field(
        default=32, gt=0, description="Texts the local model encodes in one forward pass."
    )
    local_threads: int = Field(
        default=1,
        gt=0,
        description="Threads that run local forward passes (each uses numpy's BLAS threads).",
    )
    local_blas_threads: int | None = Field(
        default=1,
        gt=0,
        description="BLAS threads of the whole process (None leaves numpy's default): one is "
        "fastest for query-sized inputs and on a shared machine.",
    )
    openai_model: str = Field(
        default="text-embedding-3-small", description="Model name sent to the endpoint."
    )
    openai_base_url: str | None = Field(
        default=None,
        description="Endpoint base URL (e.g. http://127.0.0.1:8400/v1 for the simulator); "
        "None uses OPENAI_BASE_URL or the SDK's default.",
    )
    openai_api_key: SecretStr | None = Field(
        default=None, description="API key; None uses OPENAI_API_KEY."
    )
    openai_dimensions: int | None = Field(
        default=None,
        gt=0,
        description="Requested vector length (models that support shortening), else the model's.",
    )
    openai_timeout_s: float = Field(
        default=10.0, gt=0, description="Timeout of one embeddings request."
    )
    openai_max_retries: int = Field(
        default=2, ge=0, description="SDK retries (with backoff) of a failed request."
    )
    openai_batch_size: int = Field(
        default=128, gt=0, description="Texts sent in one embeddings request."
    )
    query_cache_size: int = Field(
        default=4_096,
        ge=0,
        description="Query embeddings kept (least recently used dropped first); 0 disables.",
    )
    query_cache_ttl_s: float = Field(
        default=3_600.0, gt=0, description="How long a cached query embedding is reused."
    )
