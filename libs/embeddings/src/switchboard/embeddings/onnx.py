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
from switchboard.embeddings.settings import WEIGHTS

# Opset 20 has Gelu with the tanh approximation; ONNX Runtime runs it as one kernel.
OPSET = 20


def _import_runtime() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:  # the extra is not installed: the caller falls back to numpy
        raise EmbeddingError(f"ONNX Runtime is not installed ({exc})") from exc
    return onnx, onnxruntime


def build_graph(
    encoder: BertEncoder, layers: int, down_outliers: Sequence[Sequence[int]] = ()
) -> bytes:
    """The serialized ONNX model of `encoder`'s first `layers` transformer layers with mean
    pooling (unnormalised, like `BertEncoder._forward`). `down_outliers[i]` lists input
    channels of layer i's feed-forward down projection to compute apart (`outlier_channels`):
    the product is split into the other channels (`l{i}.down.main.mm`, zeros in their place) plus
    those few (`l{i}.down.outliers.mm`), the same sum, so that `quantize_int8` can quantize
    the first and keep the second in float32.

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
        outliers = list(down_outliers[i]) if i < len(down_outliers) else []
        if outliers:
            keep = np.ones(layer.down_w.shape[0], dtype=np.float32)
            keep[outliers] = 0.0
            rest = node("Mul", [up, const(f"{p}.down.keep", keep)], f"{p}.down.rest")
            picked = node(
                "Gather",
                [up, const(f"{p}.down.channels", np.array(outliers, dtype=np.int64))],
                f"{p}.down.picked",
                axis=2,
            )
            apart = node(
                "MatMul",
                [picked, const(f"{p}.down.outliers.w", layer.down_w[outliers])],
                f"{p}.down.outliers.mm",
            )
            main = linear(rest, layer.down_w, layer.down_b, f"{p}.down.main")
            down = node("Add", [main, apart], f"{p}.down")
        else:
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


# Sentences whose activations find the outlier channels (`outlier_channels`): any ordinary
# text shows them, they come from the [CLS] and [SEP] tokens.
_CALIBRATION = (
    "Hello, how can I help you today?",
    "My internet connection keeps dropping every evening since the update.",
    "Where is my order?",
    "Why was I charged twice this month for the same subscription?",
)
# A channel is an outlier when its largest activation is this many times the 99th percentile
# of the layer's channels' largest (MiniLM: 13-24 against at most 5.6 for the others).
_OUTLIER_FACTOR = 3.0


def outlier_channels(encoder: BertEncoder, layers: int) -> list[list[int]]:
    """Per layer, the input channels of the feed-forward down projection whose activations
    (after GELU) dwarf the others': MiniLM's first layer has one (channel 856, up to ~25 at
    [CLS], the others at most ~6), the next three one or two each. One int8 scale per
    input cannot hold both: the outliers would take most of the range."""
    onnx, ort = _import_runtime()
    model = onnx.load_from_string(build_graph(encoder, layers))
    names = [f"l{i}.gelu" for i in range(layers)]
    for name in names:
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, 1, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    largest = np.zeros((layers, encoder.layers[0].down_w.shape[0]), dtype=np.float32)
    for ids in encoder.token_ids(_CALIBRATION):
        outputs = session.run(names, _feed([ids]))
        for i, output in enumerate(outputs):
            largest[i] = np.maximum(largest[i], np.abs(output[0]).max(axis=0))
    return [
        [int(c) for c in np.flatnonzero(row > _OUTLIER_FACTOR * np.percentile(row, 99))]
        for row in largest
    ]


def quantize_int8(graph: bytes, down: bool = False) -> bytes:
    """`graph` with the weights of its linear layers quantized to int8, one scale per output
    channel; ONNX Runtime quantizes their inputs on the fly (dynamic quantization, one scale
    per input). The query, key, value, attention output and feed-forward up projections
    always; the feed-forward down projection only with `down`, and then only its main part
    (a graph built with `down_outliers`: the outlier channels' product stays float32). The
    attention products and everything else stay float32.

    The down projection's input (after GELU) carries BERT's outlier activations, which one
    int8 scale per input cannot hold. Quantized whole, the router's cross-validated dev
    figure fell from 88% to 84% of simple messages kept cheap (2026-12-06); with its outlier
    channels apart, dev as before (docs/routing.md, "Latency").

    Why (issue 20, decision 0060): the router's one-layer pass reads ~7 MB of float32 weights
    for a query, and its cost grows with the message; int8 reads a quarter and runs on the
    CPU's integer dot-product units, about 2x faster. The vectors are close to, not the same
    as, the float32 ones, so a router is scored with the weights it was trained on.

    They also differ a little by CPU: without VNNI (AVX2 only) ONNX Runtime adds pairs of
    8-bit products in 16 bits, which can saturate. On an AMD EPYC without VNNI (2026-12-06) the
    full model's lowest cosine to float32 was 0.977 (above 0.98 with VNNI), and the knowledge
    eval was unchanged (dev recall@3 0.95, held-out 1.00). 7-bit weights (`reduce_range`)
    would make every CPU compute the same, but cost precision: dev recall@3 0.90 there."""
    onnx, _ = _import_runtime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load_from_string(graph)
    weights = {i.name for i in model.graph.initializer}
    linear = [
        n.name
        for n in model.graph.node
        if n.op_type == "MatMul"
        and any(i in weights for i in n.input)
        and not n.name.endswith(".down.outliers.mm")
        and (down or ".down." not in n.name)
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


def _feed(batch: Sequence[Sequence[int]]) -> dict[str, NDArray[Any]]:
    """The graph's inputs for a batch of word-piece ids (padded with zeros, masked)."""
    n, length = len(batch), max(len(ids) for ids in batch)
    ids = np.zeros((n, length), dtype=np.int64)
    mask = np.zeros((n, length, 1), dtype=np.float32)
    for i, row in enumerate(batch):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1.0
    bias = ((1.0 - mask[:, :, 0]) * np.float32(-1e9))[:, None, None, :]
    return {
        "input_ids": ids,
        "positions": np.arange(length, dtype=np.int64),
        "mask": mask,
        "attention_bias": bias,
    }


class _DropRecords(logging.Filter):
    """Drops the log records whose message starts with `prefix`."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


class OnnxBertEncoder:
    """`BertEncoder.encode` on ONNX Runtime: the same arguments and the same vectors.

    One session per layer count and weight type a caller asks for (the router runs one
    layer in int8, retrieval all six in float32), built on first use; sessions are
    thread-safe. `threads` is ONNX Runtime's
    intra-op threads: one, as for BLAS, is fastest for a query on a busy 2-core machine."""

    def __init__(self, reference: BertEncoder, threads: int = 1) -> None:
        _, self._ort = _import_runtime()
        self.reference = reference
        self.hidden = reference.hidden
        self.max_tokens = reference.max_tokens
        self._threads = threads
        self._sessions: dict[tuple[int, str], Any] = {}
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

    def session(self, layers: int | None, weights: str = "float32") -> Any:
        """The session that runs the first `layers` layers (None: all) with `weights` (see
        `WEIGHTS`), built once."""
        if weights not in WEIGHTS:
            raise EmbeddingError(f"unknown weights {weights!r} (one of {', '.join(WEIGHTS)})")
        count = (
            len(self.reference.layers)
            if layers is None
            else min(layers, len(self.reference.layers))
        )
        with self._lock:
            found = self._sessions.get((count, weights))
            if found is None:
                if weights == "int8-all":
                    outliers = outlier_channels(self.reference, count)
                    graph = quantize_int8(build_graph(self.reference, count, outliers), down=True)
                elif weights == "int8":
                    graph = quantize_int8(build_graph(self.reference, count))
                else:
                    graph = build_graph(self.reference, count)
                options = self._ort.SessionOptions()
                options.intra_op_num_threads = self._threads
                options.inter_op_num_threads = 1
                options.execution_mode = self._ort.ExecutionMode.ORT_SEQUENTIAL
                options.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                # No spin-waiting threads on a shared machine.
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                found = self._ort.InferenceSession(
                    graph,
                    sess_options=options,
                    providers=["CPUExecutionProvider"],
                    # The fused residual + LayerNorm kernel is slower than the two it
                    # replaces at these sizes (one layer, 48 pieces: 0.13 against 0.02 ms
                    # per LayerNorm; six layers: ~8% of the pass); same vectors.
                    disabled_optimizers=["SkipLayerNormFusion"],
                )
                self._sessions[(count, weights)] = found
        return found

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return self.reference.token_ids(texts)

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 32,
        layers: int | None = None,
        max_tokens: int | None = None,
        weights: str = "float32",
    ) -> Vectors:
        """See `BertEncoder.encode`; `weights` other than float32 run the linear layers
        with int8 weights (`WEIGHTS`), one text per pass (their inputs' scales are computed
        per pass: a text's vector must not depend on the texts batched with it)."""
        ids = truncate_ids(self.token_ids(texts), max_tokens)
        session = self.session(layers, weights)
        if weights != "float32":
            batch_size = 1
        out = np.zeros((len(ids), self.hidden), dtype=np.float32)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            pooled: F32 = session.run(["pooled"], _feed([ids[i] for i in rows]))[0]
            out[rows] = pooled
        return normalise(out)
