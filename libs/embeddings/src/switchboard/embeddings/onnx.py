"""The same BERT encoder run by ONNX Runtime (CPU): one native call per forward pass.

The graph is built here with the `onnx` package's helper API from the weights the numpy
encoder (`local.BertEncoder`, the reference) already loaded: no PyTorch, no export step, no
download. It computes exactly what the numpy encoder computes (the tanh form of GELU
included, so the router's and the injection classifier's trained weights see the same
vectors); the unit tests hold the two to a cosine above 0.9999.

Why (docs/decisions/0023-embeddings-on-onnx-runtime.md): a query's forward pass in numpy is
some forty small native calls, each releasing and re-taking the GIL; in a service whose
other threads (span exporters, gRPC) run Python, every re-take can wait up to the
interpreter's switch interval. ONNX Runtime runs the pass in one call, with fused kernels
(LayerNorm, GELU) and faster small matrix products.
"""

import logging
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from switchboard.embeddings.base import EmbeddingError, Vectors, normalise
from switchboard.embeddings.local import F32, BertEncoder, truncate_ids

# Opset 20 has Gelu with the tanh approximation; ONNX Runtime runs it as one kernel.
OPSET = 20


def _import_runtime() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:  # the extra is not installed: the caller falls back to numpy
        raise EmbeddingError(f"ONNX Runtime is not installed ({exc})") from exc
    return onnx, onnxruntime


def build_graph(encoder: BertEncoder, layers: int) -> bytes:
    """The serialized ONNX model of `encoder`'s first `layers` transformer layers with mean
    pooling (unnormalised, like `BertEncoder._forward`).

    Inputs: `input_ids` (batch, length) int64, `positions` (length,) int64, `mask`
    (batch, length, 1) float32 (1 for a real token), `attention_bias` (batch, 1, 1, length)
    float32 (0, or a large negative number for padding). Output: `pooled` (batch, hidden).
    """
    onnx, _ = _import_runtime()
    helper, numpy_helper, tp = onnx.helper, onnx.numpy_helper, onnx.TensorProto
    hidden, heads = encoder.hidden, encoder.heads
    head = hidden // heads
    initializers: list[Any] = []
    nodes: list[Any] = []

    def const(name: str, value: NDArray[Any]) -> str:
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(op: str, inputs: Sequence[str], output: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, list(inputs), [output], name=output, **attrs))
        return output

    def linear(x: str, weight: F32, bias: F32, name: str) -> str:
        product = node("MatMul", [x, const(f"{name}.w", weight)], f"{name}.mm")
        return node("Add", [product, const(f"{name}.b", bias)], name)

    def layer_norm(x: str, weight: F32, bias: F32, name: str) -> str:
        return node(
            "LayerNormalization",
            [x, const(f"{name}.g", weight), const(f"{name}.beta", bias)],
            name,
            axis=-1,
            epsilon=encoder.eps,
        )

    words = node("Gather", [const("word", encoder.word), "input_ids"], "words")
    places = node("Gather", [const("position", encoder.position), "positions"], "places")
    x = node("Add", [words, places], "emb.sum")
    x = node("Add", [x, const("token_type", encoder.token_type[0])], "emb.typed")
    x = layer_norm(x, encoder.emb_ln_w, encoder.emb_ln_b, "emb.ln")
    split_heads = const("shape.heads", np.array([0, 0, heads, head], dtype=np.int64))
    merge_heads = const("shape.hidden", np.array([0, 0, hidden], dtype=np.int64))
    scale = const("scale", np.array(1.0 / np.sqrt(head), dtype=np.float32))
    for i, layer in enumerate(encoder.layers[:layers]):
        p = f"l{i}"
        qkv_w = layer.qkv_w.reshape(hidden, 3, hidden)
        qkv_b = layer.qkv_b.reshape(3, hidden)
        q, k, v = (
            node(
                "Reshape",
                [linear(x, qkv_w[:, j], qkv_b[j], f"{p}.{name}"), split_heads],
                f"{p}.{name}.heads",
            )
            for j, name in enumerate(("q", "k", "v"))
        )
        q = node("Transpose", [q], f"{p}.q.t", perm=[0, 2, 1, 3])  # (batch, heads, len, head)
        k = node("Transpose", [k], f"{p}.k.t", perm=[0, 2, 3, 1])  # (batch, heads, head, len)
        v = node("Transpose", [v], f"{p}.v.t", perm=[0, 2, 1, 3])
        scores = node("MatMul", [q, k], f"{p}.scores")
        scores = node("Mul", [scores, scale], f"{p}.scaled")
        scores = node("Add", [scores, "attention_bias"], f"{p}.masked")
        weights = node("Softmax", [scores], f"{p}.softmax", axis=-1)
        context = node("MatMul", [weights, v], f"{p}.context")
        context = node("Transpose", [context], f"{p}.context.t", perm=[0, 2, 1, 3])
        context = node("Reshape", [context, merge_heads], f"{p}.context.merged")
        attended = linear(context, layer.out_w, layer.out_b, f"{p}.out")
        x = layer_norm(
            node("Add", [attended, x], f"{p}.res1"), layer.ln1_w, layer.ln1_b, f"{p}.ln1"
        )
        up = node(
            "Gelu", [linear(x, layer.up_w, layer.up_b, f"{p}.up")], f"{p}.gelu", approximate="tanh"
        )
        down = linear(up, layer.down_w, layer.down_b, f"{p}.down")
        x = layer_norm(node("Add", [down, x], f"{p}.res2"), layer.ln2_w, layer.ln2_b, f"{p}.ln2")
    # Mean over the real tokens.
    summed = node(
        "ReduceSum",
        [node("Mul", [x, "mask"], "masked"), const("axis1", np.array([1]))],
        "summed",
        keepdims=0,
    )
    count = node("ReduceSum", ["mask", "axis1"], "count", keepdims=0)
    count = node("Max", [count, const("one", np.array(1.0, dtype=np.float32))], "count.min1")
    node("Div", [summed, count], "pooled")

    graph = helper.make_graph(
        nodes,
        "bert_mean_pooled",
        [
            helper.make_tensor_value_info("input_ids", tp.INT64, ["batch", "length"]),
            helper.make_tensor_value_info("positions", tp.INT64, ["length"]),
            helper.make_tensor_value_info("mask", tp.FLOAT, ["batch", "length", 1]),
            helper.make_tensor_value_info("attention_bias", tp.FLOAT, ["batch", 1, 1, "length"]),
        ],
        [helper.make_tensor_value_info("pooled", tp.FLOAT, ["batch", hidden])],
        initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="switchboard"
    )
    model.ir_version = 9  # what ONNX Runtime 1.17+ reads
    serialized: bytes = model.SerializeToString()
    return serialized


def quantize_int8(graph: bytes) -> bytes:
    """`graph` with the weights of its linear layers (query, key, value, attention output,
    feed-forward up) quantized to int8, one scale per output channel; ONNX Runtime quantizes
    their inputs on the fly (dynamic quantization, one scale per input). The feed-forward
    down projection stays float32: its input (after GELU) has BERT's outlier activations,
    which one int8 scale per input cannot hold (with it quantized too the router's vectors
    drifted to cosine ~0.965 from float32 and its cross-validated dev figures dropped from
    88% to 84% of simple messages kept cheap; without it, cosine ~0.9998 and 88%). The
    attention products and everything else stay float32 as well.

    Why (issue 20, decision 0060): the router's one-layer pass reads ~7 MB of float32 weights
    for a query, and its cost grows with the message; int8 reads a quarter and runs on the
    CPU's integer dot-product units, about 2x faster. The vectors are close to, not the same
    as, the float32 ones, so a router is scored with the weights it was trained on."""
    onnx, _ = _import_runtime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load_from_string(graph)
    weights = {i.name for i in model.graph.initializer}
    linear = [
        n.name
        for n in model.graph.node
        if n.op_type == "MatMul"
        and any(i in weights for i in n.input)
        and not n.name.endswith(".down.mm")
    ]
    with tempfile.TemporaryDirectory(prefix="switchboard-onnx-") as directory:
        source, target = Path(directory) / "float32.onnx", Path(directory) / "int8.onnx"
        source.write_bytes(graph)
        # The tool advises its shape-inference pre-pass on the root logger at every build;
        # this graph's MatMuls have known shapes, and the advice is noise in a service log.
        advice = _DropRecords("Please consider to run pre-processing")
        logging.getLogger().addFilter(advice)
        try:
            quantize_dynamic(
                source,
                target,
                weight_type=QuantType.QInt8,
                per_channel=True,
                nodes_to_quantize=linear,
            )
        finally:
            logging.getLogger().removeFilter(advice)
        return target.read_bytes()


class _DropRecords(logging.Filter):
    """Drops the log records whose message starts with `prefix`."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


class OnnxBertEncoder:
    """`BertEncoder.encode` on ONNX Runtime: the same arguments and the same vectors.

    One session per layer count (and weight type) a caller asks for (the router runs one
    layer in int8, retrieval all six in float32), built on first use; sessions are
    thread-safe. `threads` is ONNX Runtime's
    intra-op threads: one, as for BLAS, is fastest for a query on a busy 2-core machine."""

    def __init__(self, reference: BertEncoder, threads: int = 1) -> None:
        _, self._ort = _import_runtime()
        self.reference = reference
        self.hidden = reference.hidden
        self.max_tokens = reference.max_tokens
        self._threads = threads
        self._sessions: dict[tuple[int, bool], Any] = {}
        self._lock = threading.Lock()

    @property
    def tokenizer(self) -> Any:
        """The reference's word-piece tokenizer."""
        return self.reference.tokenizer

    @property
    def layers(self) -> list[Any]:
        """The reference's layers (read only: the reference is shared by the process's
        encoders, see `shared_reference`)."""
        return self.reference.layers

    def session(self, layers: int | None, int8: bool = False) -> Any:
        """The session that runs the first `layers` layers (None: all), with int8 weights
        (`quantize_int8`) or float32, built once."""
        count = (
            len(self.reference.layers)
            if layers is None
            else min(layers, len(self.reference.layers))
        )
        with self._lock:
            found = self._sessions.get((count, int8))
            if found is None:
                graph = build_graph(self.reference, count)
                options = self._ort.SessionOptions()
                options.intra_op_num_threads = self._threads
                options.inter_op_num_threads = 1
                options.execution_mode = self._ort.ExecutionMode.ORT_SEQUENTIAL
                options.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                # No spin-waiting threads on a shared machine.
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                found = self._ort.InferenceSession(
                    quantize_int8(graph) if int8 else graph,
                    sess_options=options,
                    providers=["CPUExecutionProvider"],
                )
                self._sessions[(count, int8)] = found
        return found

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return self.reference.token_ids(texts)

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 32,
        layers: int | None = None,
        max_tokens: int | None = None,
        int8: bool = False,
    ) -> Vectors:
        """See `BertEncoder.encode`; `int8` runs the linear layers with int8 weights, one
        text per pass (their inputs' scales are computed per pass: a text's vector must not
        depend on the texts batched with it)."""
        ids = truncate_ids(self.token_ids(texts), max_tokens)
        session = self.session(layers, int8)
        if int8:
            batch_size = 1
        out = np.zeros((len(ids), self.hidden), dtype=np.float32)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            out[rows] = self._forward(session, [ids[i] for i in rows])
        return normalise(out)

    def _forward(self, session: Any, batch: list[list[int]]) -> F32:
        n, length = len(batch), max(len(ids) for ids in batch)
        ids = np.zeros((n, length), dtype=np.int64)
        mask = np.zeros((n, length, 1), dtype=np.float32)
        for i, row in enumerate(batch):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1.0
        bias = ((1.0 - mask[:, :, 0]) * np.float32(-1e9))[:, None, None, :]
        pooled: F32 = session.run(
            ["pooled"],
            {
                "input_ids": ids,
                "positions": np.arange(length, dtype=np.int64),
                "mask": mask,
                "attention_bias": bias,
            },
        )[0]
        return pooled
