"""Ragged (unpadded) encoders for Triton's ragged batching: `onnx_ragged`, `torchscript_ragged`.

Requests of every length batch together: the preprocessing emits each request's tokens
unpadded (`padding: none`: `INPUT_IDS` [n, ceil(T/n)] and `LENGTHS` [n, 1] for n texts),
the composing model's inputs have `allow_ragged_batch`, and the backend adds where each
request starts (`BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO`, TYPE_INT32). The graph (built by
`unpadded_encoder`, whose docstring has the whole contract) runs every token-wise
layer on the flat token stream and pads only inside attention, per length bucket.
Served by NVIDIA's `onnxruntime` and `pytorch` backends, and by the local stand-ins, which
compute ragged inputs and batch inputs as those do (`backends/triton/tritongen_batching.py`).

Builders (`Builder.ragged`): the padded builder module (`Builder.padded_module`: the same
weights, pooling, Dense/Normalize modules, prototypes embedded with the version's preprocessing)
turned ragged (`unpadded_encoder.ragged_from_padded`): `sentence_embedding` (`embedding`
[texts, dim]) and, in ONNX, `transformers_classifier` and `prototype_classifier` (`logits`
[texts, labels], then `probabilities` and `label` [texts, 1] computed in the graph as for the
padded ONNX classifier, `onnx.append_classifier_outputs`). TorchScript cannot return the string
`label` to the pytorch backend, so `torchscript_ragged` serves no classifiers (like `torchscript`).
`cross_encoder` (kind reranker, both formats): `score` [pairs, 1] of (query, text) pairs, which
also take `token_type_ids`, ragged and packed like `input_ids` (the tokenizer's `padding: none`
pairs), so `token_offsets` serves both.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from generator.base.tensors import BatchInputPlan, TensorPlan
from generator.kinds.builders.base import Builder, ClassifierHead
from generator.kinds.formats.base import GRAPH_OUTPUTS, InferenceFormat
from generator.kinds.formats.onnx import NATIVE_MEMORY as ONNX_NATIVE_MEMORY
from generator.kinds.formats.onnx import (
    QUANTIZE_METHODS,
    append_classifier_outputs,
    check_onnx,
    onnx_runner,
    quantize_onnx,
)
from generator.kinds.formats.onnx import STANDIN_MEMORY as ONNX_STANDIN_MEMORY
from generator.kinds.formats.torchscript import STANDIN_MEMORY as TORCHSCRIPT_STANDIN_MEMORY
from generator.kinds.preprocessing.base import PreprocessingSettings

if TYPE_CHECKING:
    import numpy as np
    from tritonclient.grpc import model_config_pb2 as mc

RAGGED_INPUTS = ("input_ids", "lengths")
RAGGED_PAIR_INPUTS = ("input_ids", "lengths", "token_type_ids")
"""A reranker's: the pairs' segments too, in the order the tokenizer outputs them."""
OFFSETS = (("token_offsets", "input_ids"), ("text_offsets", "lengths"))
"""(batch input, the ragged input it counts)."""


class _Ragged(InferenceFormat):
    ragged = True

    def tensor_names(self, model_kind: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return RAGGED_PAIR_INPUTS if model_kind == "reranker" else RAGGED_INPUTS, GRAPH_OUTPUTS[model_kind]

    def inputs(self, model_kind: str) -> tuple[TensorPlan, ...]:
        tokens = (
            TensorPlan("input_ids", "TYPE_INT64", (-1,), ragged=True),
            TensorPlan("lengths", "TYPE_INT64", (1,), ragged=True),
        )
        if model_kind != "reranker":
            return tokens
        return (*tokens, TensorPlan("token_type_ids", "TYPE_INT64", (-1,), ragged=True))

    def batch_inputs(self) -> tuple[BatchInputPlan, ...]:
        return tuple(
            BatchInputPlan("BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO", target, "TYPE_INT32", source)
            for target, source in OFFSETS
        )

    def code_files(self) -> tuple[Path, ...]:
        here = Path(__file__)
        return (here.with_name("unpadded_encoder.py"), here.with_name("unpadded_families.py"), here)

    def export(
        self,
        builder: Builder,
        settings: Any,
        preprocessing: PreprocessingSettings,
        output: Path,
        head: ClassifierHead | None,
    ) -> None:
        from generator.kinds.formats import unpadded_encoder  # imports torch

        if not builder.ragged:
            raise ValueError(f"{self.name} cannot build {builder.name}: its builder has no unpadded encoder")
        if head is not None and not self.classifiers:
            raise ValueError(f"{self.name} cannot return the string label of a classifier")
        problem = builder.unpadded_problem(settings)  # e.g. a position embedding type it does not cover
        if problem is not None:
            raise ValueError(f"{self.name}: {problem}")
        module = unpadded_encoder.ragged_from_padded(builder.padded_module(settings, preprocessing))
        if head is None:
            self._write(module, output, builder.output_name)
        else:
            self._write_classifier(module, head, output)

    def _write(self, module: object, output: Path, output_name: str) -> None:
        raise NotImplementedError

    def _write_classifier(self, module: object, head: ClassifierHead, output: Path) -> None:
        raise NotImplementedError


class OnnxRagged(_Ragged):
    name = "onnx_ragged"
    filename = "model.onnx"
    backend = "onnxruntime"
    rerankers = True
    standin_memory = ONNX_STANDIN_MEMORY
    """As `onnx`: the same runner and weights (measured together in the Kubernetes pod)."""
    native_memory = ONNX_NATIVE_MEMORY
    """As `onnx` (the same weights in the same runtime; not measured on its own)."""

    def parameters(self, threads: int) -> dict[str, str]:
        return {"intra_op_thread_count": str(threads), "inter_op_thread_count": "1"}

    def check(self, path: Path, config: mc.ModelConfig) -> list[str]:
        return check_onnx(path, config)

    def _write(self, module: object, output: Path, output_name: str) -> None:
        from generator.kinds.formats import unpadded_encoder  # imports torch

        unpadded_encoder.export_onnx(module, output, output_name)  # type: ignore[arg-type]

    def _write_classifier(self, module: object, head: ClassifierHead, output: Path) -> None:
        """`logits` as exported, then the classifier tail in the graph (the padded recipe)."""
        import onnx

        from generator.kinds.formats import unpadded_encoder  # imports torch

        unpadded_encoder.export_onnx(module, output, output_name="logits")  # type: ignore[arg-type]
        graph_model = onnx.load(str(output))
        append_classifier_outputs(graph_model, head)
        onnx.checker.check_model(graph_model)
        onnx.save(graph_model, str(output))

    quantize_methods = QUANTIZE_METHODS

    def quantize(self, method: str, source: Path, output: Path, per_channel: bool) -> None:
        quantize_onnx(method, source, output, per_channel)

    def example_inputs(
        self, ids: np.ndarray, mask: np.ndarray, token_types: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """One request per text (or pair), batched as the backend concatenates ragged requests."""
        import numpy as np

        lengths = mask.sum(axis=1).astype(np.int64)

        def unpadded(rows: np.ndarray) -> np.ndarray:
            return np.concatenate([row[:length] for row, length in zip(rows, lengths, strict=True)]).astype(np.int64)

        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        inputs = {
            "input_ids": unpadded(ids),
            "lengths": lengths,
            "token_offsets": offsets,
            "text_offsets": np.arange(len(lengths) + 1, dtype=np.int32),
        }
        return inputs if token_types is None else {**inputs, "token_type_ids": unpadded(token_types)}

    def runner(self, path: Path, threads: int) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
        return onnx_runner(path, threads)


class TorchScriptRagged(_Ragged):
    name = "torchscript_ragged"
    filename = "model.pt"
    backend = "pytorch"
    standin_memory = TORCHSCRIPT_STANDIN_MEMORY
    """As `torchscript` (the same runner and weights)."""
    process_wide_threads = True
    classifiers = False
    rerankers = True

    def parameters(self, threads: int) -> dict[str, str]:
        return {"INTRA_OP_THREAD_COUNT": str(threads), "DISABLE_OPTIMIZED_EXECUTION": "false"}

    def check(self, path: Path, config: mc.ModelConfig) -> list[str]:
        import torch

        from generator.kinds.formats import unpadded_encoder  # imports torch

        try:
            module = torch.jit.load(str(path), map_location="cpu")
            sample = unpadded_encoder.sample_inputs(pairs=any(i.name == "token_type_ids" for i in config.input))
            with torch.inference_mode():
                result = module(*sample)
        except Exception as error:  # torch raises many error types on load/run
            return [f"{config.name}: TorchScript file {path} does not load and run: {error}"]
        texts = int(sample[1].numel())
        expected = [texts, *config.output[0].dims]
        if list(result.shape) != expected:
            shape = list(result.shape)
            return [f"{config.name}: ragged TorchScript returns {shape} for {texts} texts, want {expected}"]
        return []

    def _write(self, module: object, output: Path, output_name: str) -> None:
        from generator.kinds.formats import unpadded_encoder  # imports torch

        unpadded_encoder.export_torchscript(module, output)  # type: ignore[arg-type]
