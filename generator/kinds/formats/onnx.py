"""ONNX, served by Triton's `onnxruntime` backend (local: the Python-based stand-in)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from generator.kinds.formats import InferenceFormat

if TYPE_CHECKING:
    import numpy as np
    from tritonclient.grpc import model_config_pb2 as mc

ONNX_TYPES = {1: "TYPE_FP32", 7: "TYPE_INT64", 8: "TYPE_STRING", 6: "TYPE_INT32", 11: "TYPE_FP64"}
"""ONNX element types -> Triton data types."""
QUANTIZE_METHODS = ("dynamic_int8",)
"""`model.quantize` methods of the ONNX formats (ONNX Runtime's quantizer)."""
QUANTIZED_OPS = ["MatMul", "Gather"]
"""Operators whose constant weights are quantized: the dense layers and the embedding tables
(quantizing the tables too costs MiniLM no measurable fidelity and saves 35 of its 90 MB)."""


class Onnx(InferenceFormat):
    name = "onnx"
    filename = "model.onnx"
    backend = "onnxruntime"
    ragged_variant = "onnx_ragged"

    def tensor_names(self, model_kind: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        outputs = ("logits", "label") if model_kind == "classifier" else ("embedding",)
        return ("input_ids", "attention_mask"), outputs

    def parameters(self, threads: int) -> dict[str, str]:
        # Per session (per instance) on the native backend; inter-op 1: the graphs are sequential.
        return {"intra_op_thread_count": str(threads), "inter_op_thread_count": "1"}

    def check(self, path: Path, config: mc.ModelConfig) -> list[str]:
        return check_onnx(path, config)

    quantize_methods = QUANTIZE_METHODS

    def quantize(self, method: str, source: Path, output: Path, per_channel: bool) -> None:
        quantize_onnx(method, source, output, per_channel)

    def example_inputs(self, ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        return {"input_ids": ids, "attention_mask": mask}


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

    from generator.pipeline.checks import dims_agree, type_name

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    problems = []
    # Batch inputs are graph inputs of shape [-1] computed by the backend (ragged batching).
    computed = [
        _ComputedInput(target, batch_input.data_type) for batch_input in config.batch_input
        for target in batch_input.target_name
    ]  # fmt: skip
    for kind, declared, actual in (
        ("input", [*config.input, *computed], [i for i in graph.input if i.name not in initializers]),
        ("output", config.output, list(graph.output)),
    ):
        graph_tensors = {t.name: t for t in actual}
        if set(graph_tensors) != {t.name for t in declared}:
            problems.append(
                f"{config.name}: config {kind}s {sorted(t.name for t in declared)} differ from the "
                f"ONNX graph's {sorted(graph_tensors)} ({path})"
            )
            continue
        for tensor in declared:
            info = graph_tensors[tensor.name].type.tensor_type
            onnx_type = ONNX_TYPES.get(info.elem_type, f"onnx type {info.elem_type}")
            if onnx_type != type_name(tensor.data_type):
                problems.append(
                    f"{config.name}: {kind} {tensor.name!r} is {type_name(tensor.data_type)} in "
                    f"the config but {onnx_type} in the ONNX graph"
                )
            graph_dims = [d.dim_value if d.HasField("dim_value") else -1 for d in info.shape.dim]
            if isinstance(tensor, _ComputedInput) or getattr(tensor, "allow_ragged_batch", False):
                expected = [-1]  # one flat tensor for the whole batch (FACTS: exactly [-1])
            elif config.max_batch_size > 0:
                expected = [-1] + list(tensor.dims)
            else:
                expected = list(tensor.dims)
            if not dims_agree(tuple(graph_dims), tuple(expected)):
                problems.append(
                    f"{config.name}: {kind} {tensor.name!r} has dims {expected} (with batch) in "
                    f"the config but {graph_dims} in the ONNX graph"
                )
    return problems
