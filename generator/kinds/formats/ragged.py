"""Ragged (unpadded) encoders for Triton's ragged batching: `onnx_ragged`, `torchscript_ragged`.

Requests of every length batch together: the preprocessing emits each request's tokens
unpadded (`padding: none`: `INPUT_IDS` [n, ceil(T/n)] and `LENGTHS` [n, 1] for n texts),
the composing model's inputs have `allow_ragged_batch`, and the backend adds where each
request starts (`BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO`, TYPE_INT32). The graph (built by
`generator.pipeline.ragged`, whose docstring has the whole contract) runs every token-wise
layer on the flat token stream and pads only inside attention, per length bucket.
Served by NVIDIA's `onnxruntime` and `pytorch` backends, and by the local stand-ins, which
compute ragged inputs and batch inputs as those do (`backends/triton/tritongen_batching.py`).

Builders: `sentence_embedding` (`embedding` [texts, dim]) and, in ONNX, `prototype_classifier`:
the padded builder module (`artifacts.make_module`: the same prototypes, embedded with the
version's preprocessing) turned ragged (`ragged.ragged_from_padded`), `logits` [texts, labels],
and `label` [texts, 1] looked up in the graph as for the padded ONNX classifier. TorchScript
cannot return the string `label` to the pytorch backend, so `torchscript_ragged` serves
embeddings only (like `torchscript`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from generator.kinds.formats import InferenceFormat
from generator.kinds.formats.onnx import QUANTIZE_METHODS, check_onnx, quantize_onnx

if TYPE_CHECKING:
    import numpy as np
    from tritonclient.grpc import model_config_pb2 as mc

    from generator.pipeline.plan import BatchInputPlan, TensorPlan
    from generator.pipeline.spec import ModelArtifact, Preprocessing

RAGGED_INPUTS = ("input_ids", "lengths")
OFFSETS = (("token_offsets", "input_ids"), ("text_offsets", "lengths"))
"""(batch input, the ragged input it counts)."""


class _Ragged(InferenceFormat):
    ragged = True

    def tensor_names(self, model_kind: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return RAGGED_INPUTS, (("logits", "label") if model_kind == "classifier" else ("embedding",))

    def inputs(self, model_kind: str) -> tuple[TensorPlan, ...]:
        from generator.pipeline.plan import TensorPlan

        return (
            TensorPlan("input_ids", "TYPE_INT64", (-1,), ragged=True),
            TensorPlan("lengths", "TYPE_INT64", (1,), ragged=True),
        )

    def batch_inputs(self) -> tuple[BatchInputPlan, ...]:
        from generator.pipeline.plan import BatchInputPlan

        return tuple(
            BatchInputPlan("BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO", target, "TYPE_INT32", source)
            for target, source in OFFSETS
        )

    def export(self, artifact: ModelArtifact, preprocessing: Preprocessing, output: Path) -> bool:
        from generator.pipeline import ragged
        from generator.pipeline.source_model import package_path, read_sentence_transformer_config
        from generator.pipeline.spec import EmbeddingBuild, PrototypeClassifierBuild

        build = artifact.build
        builders = "sentence_embedding or prototype_classifier" if self.classifiers else "sentence_embedding"
        if not isinstance(build, EmbeddingBuild | PrototypeClassifierBuild) or (
            isinstance(build, PrototypeClassifierBuild) and not self.classifiers
        ):
            raise ValueError(f"{self.name} is built by the {builders} builder only")
        model = read_sentence_transformer_config(package_path(build.source.package, build.source.path))
        if model.pooling != "mean":
            raise ValueError(f"{self.name}: the ragged encoder pools by mean only, {model.folder} uses {model.pooling}")
        if isinstance(build, EmbeddingBuild):
            module = ragged.load_ragged_module(model.encoder_folder, normalize=model.normalize)
            self._write(module, output)
            return True
        from generator.pipeline.artifacts import make_module

        classifier = ragged.ragged_from_padded(make_module(build, preprocessing))
        self._write_classifier(classifier, list(build.labels), output)
        return True

    def _write(self, module: object, output: Path) -> None:
        raise NotImplementedError

    def _write_classifier(self, module: object, labels: list[str], output: Path) -> None:
        raise NotImplementedError


class OnnxRagged(_Ragged):
    name = "onnx_ragged"
    filename = "model.onnx"
    backend = "onnxruntime"

    def parameters(self, threads: int) -> dict[str, str]:
        return {"intra_op_thread_count": str(threads), "inter_op_thread_count": "1"}

    def check(self, path: Path, config: mc.ModelConfig) -> list[str]:
        return check_onnx(path, config)

    def _write(self, module: object, output: Path) -> None:
        from generator.pipeline import ragged

        ragged.export_onnx(module, output)  # type: ignore[arg-type]

    def _write_classifier(self, module: object, labels: list[str], output: Path) -> None:
        """`logits` as exported, then `label` = labels[argmax] in the graph (the padded recipe)."""
        import onnx

        from generator.pipeline import ragged
        from generator.pipeline.artifacts import append_label_lookup

        ragged.export_onnx(module, output, output_name="logits")  # type: ignore[arg-type]
        graph_model = onnx.load(str(output))
        append_label_lookup(graph_model, labels)
        onnx.checker.check_model(graph_model)
        onnx.save(graph_model, str(output))

    quantize_methods = QUANTIZE_METHODS

    def quantize(self, method: str, source: Path, output: Path, per_channel: bool) -> None:
        quantize_onnx(method, source, output, per_channel)

    def example_inputs(self, ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """One request per text, batched as the backend concatenates ragged requests."""
        import numpy as np

        lengths = mask.sum(axis=1).astype(np.int64)
        tokens = np.concatenate([row[:length] for row, length in zip(ids, lengths, strict=True)])
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        return {
            "input_ids": tokens.astype(np.int64),
            "lengths": lengths,
            "token_offsets": offsets,
            "text_offsets": np.arange(len(lengths) + 1, dtype=np.int32),
        }


class TorchScriptRagged(_Ragged):
    name = "torchscript_ragged"
    filename = "model.pt"
    backend = "pytorch"
    process_wide_threads = True
    classifiers = False

    def parameters(self, threads: int) -> dict[str, str]:
        return {"INTRA_OP_THREAD_COUNT": str(threads), "DISABLE_OPTIMIZED_EXECUTION": "false"}

    def check(self, path: Path, config: mc.ModelConfig) -> list[str]:
        import torch

        from generator.pipeline import ragged

        try:
            module = torch.jit.load(str(path), map_location="cpu")
            sample = ragged.sample_inputs()
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

    def _write(self, module: object, output: Path) -> None:
        from generator.pipeline import ragged

        ragged.export_torchscript(module, output)  # type: ignore[arg-type]
