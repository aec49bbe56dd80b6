"""ONNX, served by Triton's `onnxruntime` backend (local: the Python-based stand-in)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from generator.base.footprint import Footprint
from generator.base.tensors import dims_agree, type_name
from generator.kinds.builders.base import Builder, ClassifierHead
from generator.kinds.formats.base import GRAPH_OUTPUTS, PAIR_INPUTS, PROBABILITIES, InferenceFormat
from generator.kinds.preprocessing.base import PreprocessingSettings

if TYPE_CHECKING:
    import numpy as np
    from tritonclient.grpc import model_config_pb2 as mc

ONNX_TYPES = {1: "TYPE_FP32", 7: "TYPE_INT64", 8: "TYPE_STRING", 6: "TYPE_INT32", 11: "TYPE_FP64"}
"""ONNX element types -> Triton data types."""
ONNX_OPSET = 17
"""The opset every exported graph uses (NVIDIA's 24.10 image runs ONNX Runtime 1.19)."""
QUANTIZE_METHODS = ("dynamic_int8",)
"""`model.quantize` methods of the ONNX formats (ONNX Runtime's quantizer)."""
QUANTIZED_OPS = ["MatMul", "Gather"]
"""Operators whose constant weights are quantized: the dense layers and the embedding tables
(quantizing the tables too costs MiniLM no measurable fidelity and saves 35 of its 90 MB)."""

STANDIN_MEMORY: dict[str | None, Footprint] = {
    None: Footprint(
        170.0,
        "mean PSS of the shipped specs' onnx inference stubs in the Kubernetes pod (baked local image, "
        "2 cores, every entry point answered over HTTP and gRPC): 123-422 MiB, mean 170 "
        "(tests/integration/test_k8s_pod.py, 2026-12-01); bench.many's 100 fp32 classifiers: 134.7 each",
    ),
    "dynamic_int8": Footprint(
        83.0,
        "mean PSS of the inference stubs of `python -m bench.many --grow --models 5 --quantize dynamic_int8` "
        "(int8 prototype classifiers, one instance each but the hottest's two, under a Zipf load; 2 cores, "
        "2026-12-07): 82.7 with 6 stubs, 99.2 with 2; 77-79 MiB of server PSS per extra model",
    ),
}
"""One instance of the onnx formats on the `local` stand-in, by `model.quantize` method."""
NATIVE_MEMORY: dict[str | None, Footprint] = {
    None: Footprint(
        128.0,
        "PSS per extra model on NVIDIA's r24.10 onnxruntime and python backends (tritonserver 2.51), "
        "bench.many's prototype classifiers (MiniLM-L6 + head), one instance each: 373 MiB for 1 model, "
        "2,800 MiB for 20",
    ),
    "dynamic_int8": Footprint(
        38.5,
        "as the fp32 figure, the int8 classifiers: 185 MiB for 1 model, 916 MiB for 20",
    ),
}
"""One instance of the onnx formats on NVIDIA's native onnxruntime backend (a session inside
tritonserver), by `model.quantize` method."""


class Onnx(InferenceFormat):
    name = "onnx"
    filename = "model.onnx"
    backend = "onnxruntime"
    ragged_variant = "onnx_ragged"
    rerankers = True
    standin_memory = STANDIN_MEMORY
    native_memory = NATIVE_MEMORY

    def tensor_names(self, model_kind: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        if model_kind == "reranker":
            return PAIR_INPUTS, GRAPH_OUTPUTS[model_kind]
        return ("input_ids", "attention_mask"), GRAPH_OUTPUTS[model_kind]

    def parameters(self, threads: int) -> dict[str, str]:
        # Per session (per instance) on the native backend; inter-op 1: the graphs are sequential.
        return {"intra_op_thread_count": str(threads), "inter_op_thread_count": "1"}

    def check(self, path: Path, config: mc.ModelConfig) -> list[str]:
        return check_onnx(path, config)

    quantize_methods = QUANTIZE_METHODS

    def quantize(self, method: str, source: Path, output: Path, per_channel: bool) -> None:
        quantize_onnx(method, source, output, per_channel)

    def example_inputs(
        self, ids: np.ndarray, mask: np.ndarray, token_types: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        inputs = {"input_ids": ids, "attention_mask": mask}
        return inputs if token_types is None else {**inputs, "token_type_ids": token_types}

    def runner(self, path: Path, threads: int) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
        return onnx_runner(path, threads)

    def export(
        self,
        builder: Builder,
        settings: Any,
        preprocessing: PreprocessingSettings,
        output: Path,
        head: ClassifierHead | None,
    ) -> None:
        if builder.pairs:
            export_pairs_onnx(builder.padded_module(settings, preprocessing), output)
        else:
            super().export(builder, settings, preprocessing, output, head)

    def export_module(self, module: Any, output: Path, head: ClassifierHead | None) -> None:
        export_padded_onnx(module, output, head)


def sample_padded_inputs() -> tuple[Any, Any]:
    """A padded batch of two texts (`input_ids`, `attention_mask`) to trace an encoder with: small
    token ids, valid in any vocabulary; the padding (id 0) is masked, so whatever a model's pad id
    is, no output depends on it."""
    import torch

    ids = torch.tensor([[2, 5, 6, 3, 0], [2, 7, 8, 9, 3]], dtype=torch.int64)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.int64)
    return ids, mask


def export_padded_onnx(module: Any, output: Path, head: ClassifierHead | None) -> None:
    """Export a padded torch module: `embedding` or, with a classifier `head`, `logits` and the
    classifier tail (`append_classifier_outputs`)."""
    import onnx
    import torch

    output_name = "logits" if head is not None else "embedding"
    with torch.no_grad():
        torch.onnx.export(
            module,
            sample_padded_inputs(),
            str(output),
            input_names=["input_ids", "attention_mask"],
            output_names=[output_name],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                output_name: {0: "batch"},
            },
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    graph_model = onnx.load(str(output))
    # The exporter leaves non-batch output dims symbolic ("Divembedding_dim_1"): record the
    # real sizes, so that `check` can compare them with the config.
    with torch.no_grad():
        sample_output = module(*sample_padded_inputs())
    output_dims = graph_model.graph.output[0].type.tensor_type.shape.dim[1:]
    for dim, size in zip(output_dims, sample_output.shape[1:], strict=True):
        dim.Clear()
        dim.dim_value = int(size)
    if head is not None:
        append_classifier_outputs(graph_model, head)
    graph_model.producer_name = "tritongen"
    graph_model.producer_version = ""
    onnx.checker.check_model(graph_model)
    onnx.save(graph_model, str(output))


def export_pairs_onnx(module: Any, output: Path) -> None:
    """Export a reranker's padded module: `PAIR_INPUTS` [batch, sequence] -> `score` [batch, 1]."""
    import onnx
    import torch

    ids, mask = sample_padded_inputs()
    types = torch.tensor([[0, 0, 1, 1, 0], [0, 0, 0, 1, 1]], dtype=torch.int64)
    axes = {name: {0: "batch", 1: "sequence"} for name in PAIR_INPUTS}
    with torch.no_grad():
        torch.onnx.export(
            module,
            (ids, mask, types),
            str(output),
            input_names=list(PAIR_INPUTS),
            output_names=["score"],
            dynamic_axes={**axes, "score": {0: "batch"}},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    graph_model = onnx.load(str(output))
    score_dims = graph_model.graph.output[0].type.tensor_type.shape.dim
    score_dims[1].Clear()
    score_dims[1].dim_value = 1
    graph_model.producer_name = "tritongen"
    graph_model.producer_version = ""
    onnx.checker.check_model(graph_model)
    onnx.save(graph_model, str(output))


def append_classifier_outputs(graph_model: Any, head: ClassifierHead) -> None:
    """Add the classifier tail after `logits` [batch, labels] (`GRAPH_OUTPUTS`): `probabilities`
    (softmax over the labels; multi-label: a sigmoid per label) and the label strings: `label`
    [batch, 1] = labels[argmax(logits)], or multi-label `labels` [batch, labels]: each label whose
    probability is over the threshold, in label order, else "" (every row has one shape)."""
    from onnx import TensorProto, helper

    graph = graph_model.graph
    logits = next(output for output in graph.output if output.name == "logits")
    batch, width = (dim.dim_param or dim.dim_value or None for dim in logits.type.tensor_type.shape.dim)
    names = [label.encode() for label in head.labels]
    graph.initializer.append(helper.make_tensor("label_names", TensorProto.STRING, [len(names)], names))  # type: ignore[arg-type]
    if head.multi_label:
        graph.initializer.append(helper.make_tensor("label_threshold", TensorProto.FLOAT, [], [head.threshold]))
        graph.initializer.append(helper.make_tensor("no_label", TensorProto.STRING, [], [b""]))  # type: ignore[list-item]
        graph.node.append(helper.make_node("Sigmoid", ["logits"], [PROBABILITIES]))
        graph.node.append(helper.make_node("Greater", [PROBABILITIES, "label_threshold"], ["label_over"]))
        graph.node.append(helper.make_node("Where", ["label_over", "label_names", "no_label"], ["labels"]))
        strings = helper.make_tensor_value_info("labels", TensorProto.STRING, [batch, width])
    else:
        graph.node.append(helper.make_node("Softmax", ["logits"], [PROBABILITIES], axis=1))
        graph.node.append(helper.make_node("ArgMax", ["logits"], ["label_index"], axis=1, keepdims=1))
        graph.node.append(helper.make_node("Gather", ["label_names", "label_index"], ["label"], axis=0))
        strings = helper.make_tensor_value_info("label", TensorProto.STRING, [batch, 1])
    graph.output.append(helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, [batch, width]))
    graph.output.append(strings)


def onnx_session(path: Path, threads: int) -> Any:
    """An ONNX Runtime CPU session as the backend configures it: `threads` intra-op threads,
    1 inter-op thread, sequential execution."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_runner(path: Path, threads: int) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """`onnx_session` as a function of the graph's inputs returning every output by name."""
    session = onnx_session(path, threads)
    names = [output.name for output in session.get_outputs()]

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(names, inputs), strict=True))

    return run


def quantize_onnx(method: str, source: Path, output: Path, per_channel: bool) -> None:
    """`dynamic_int8`: ONNX Runtime's `quantize_dynamic`: the weights of `QUANTIZED_OPS` stored
    as int8 with their scales (per output channel, or one per tensor), activations quantized to
    uint8 per batch at run time (`DynamicQuantizeLinear` + `MatMulInteger`); same file, same bytes."""
    import logging
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if method not in QUANTIZE_METHODS:
        raise ValueError(f"unknown ONNX quantization method {method!r}: use one of {', '.join(QUANTIZE_METHODS)}")
    root = logging.getLogger()  # the quantizer logs advice ("consider pre-processing") there
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory(prefix="tritongen-quantize-") as work:  # it writes helper files there
            quantized = Path(work) / "model.onnx"
            quantize_dynamic(
                source,
                quantized,
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
                op_types_to_quantize=QUANTIZED_OPS,
            )
            graph_model = onnx.load(str(quantized))
    finally:
        root.setLevel(level)
    graph_model.producer_name = "tritongen"
    graph_model.producer_version = ""
    onnx.checker.check_model(graph_model)
    onnx.save(graph_model, str(output))


@dataclass(frozen=True)
class _ComputedInput:
    """A `batch_input` seen as a graph input."""

    name: str
    data_type: int
    dims: tuple[int, ...] = (-1,)


def check_onnx(path: Path, config: mc.ModelConfig) -> list[str]:
    """Problems between an ONNX graph's inputs/outputs and the model config."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    problems = []
    # Batch inputs are graph inputs of shape [-1] computed by the backend (ragged batching).
    computed = [
        _ComputedInput(target_name, batch_input.data_type) for batch_input in config.batch_input
        for target_name in batch_input.target_name
    ]  # fmt: skip
    for side, declared, actual in (
        ("input", [*config.input, *computed], [i for i in graph.input if i.name not in initializers]),
        ("output", config.output, list(graph.output)),
    ):
        graph_tensors = {t.name: t for t in actual}
        if set(graph_tensors) != {t.name for t in declared}:
            problems.append(
                f"{config.name}: config {side}s {sorted(t.name for t in declared)} differ from the "
                f"ONNX graph's {sorted(graph_tensors)} ({path})"
            )
            continue
        for tensor in declared:
            info = graph_tensors[tensor.name].type.tensor_type
            onnx_type = ONNX_TYPES.get(info.elem_type, f"onnx type {info.elem_type}")
            if onnx_type != type_name(tensor.data_type):
                problems.append(
                    f"{config.name}: {side} {tensor.name!r} is {type_name(tensor.data_type)} in "
                    f"the config but {onnx_type} in the ONNX graph"
                )
            graph_dims = [d.dim_value if d.HasField("dim_value") else -1 for d in info.shape.dim]
            if isinstance(tensor, _ComputedInput) or getattr(tensor, "allow_ragged_batch", False):
                expected = [-1]  # one flat tensor for the whole batch (the native backend requires exactly [-1])
            elif config.max_batch_size > 0:
                expected = [-1] + list(tensor.dims)
            else:
                expected = list(tensor.dims)
            if not dims_agree(tuple(graph_dims), tuple(expected)):
                problems.append(
                    f"{config.name}: {side} {tensor.name!r} has dims {expected} (with batch) in "
                    f"the config but {graph_dims} in the ONNX graph"
                )
    return problems
