"""What every inference format is: how a model version's network is stored and served."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from generator.base.footprint import Footprint
from generator.base.tensors import BatchInputPlan, TensorPlan
from generator.errors import TritongenError
from generator.kinds.builders.base import Builder, ClassifierHead
from generator.kinds.preprocessing.base import PreprocessingSettings

if TYPE_CHECKING:
    import numpy as np
    from tritonclient.grpc import model_config_pb2 as mc


PROBABILITIES = "probabilities"
"""The classifier tail's softmax (or sigmoid) of `logits`, [batch, labels] FP32."""
GRAPH_OUTPUTS: dict[str, tuple[str, ...]] = {
    "embedding": ("embedding",),
    "classifier": ("logits", PROBABILITIES, "label"),
    "multi_label_classifier": ("logits", PROBABILITIES, "labels"),
    "reranker": ("score",),
}
"""A graph's outputs by model kind (`ModelSpec.kind`), in the client contract's order: the
builder's float output, then the classifier tail (`ClassifierHead`): `label` [batch, 1] or
multi-label `labels` [batch, labels] strings; a reranker's `score` [batch, 1]."""
PAIR_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
"""A reranker graph's inputs: the (query, text) pairs' tokens, mask and segments."""


class UnknownFormatError(TritongenError, KeyError):
    """A format name that is not in FORMATS."""


class InferenceFormat(ABC):
    """One inference format (subclasses are stateless singletons)."""

    name: ClassVar[str]
    """The spec's `model.format` value."""
    filename: ClassVar[str]
    """`default_model_filename`: the file in the version folder."""
    backend: ClassVar[str]
    """Triton backend serving it (the name in NVIDIA's image; local stand-ins use the same)."""
    process_wide_threads: ClassVar[bool] = False
    """The native backend's thread settings are process-wide (last loaded model wins): every
    model of this format in one repository must use the same thread count."""
    classifiers: ClassVar[bool] = True
    """Whether classifier artifacts (logits, probabilities and string labels) can be built in this format."""
    rerankers: ClassVar[bool] = False
    """Whether reranker artifacts (pairs with token types -> `score`) can be built in this format."""
    ragged: ClassVar[bool] = False
    """Inputs are unpadded token streams (Triton's ragged batching): the preprocessing must not
    pad (`padding: none`), every request of any length batches with every other."""
    ragged_variant: ClassVar[str | None] = None
    """The ragged format that serves this format's builders unpadded (`tune` measures it)."""
    standin_memory: ClassVar[Mapping[str | None, Footprint]]
    """Memory of one instance on the `local` stand-ins (a runner's stub process with onnxruntime or
    torch and its own copy of the weights), by `model.quantize` method (None: full precision).
    Measured with MiniLM-L6-sized encoders (the only ones the builders make): a `file` build of
    another size is counted at these figures."""
    native_memory: ClassVar[Mapping[str | None, Footprint]] = {}
    """The same on NVIDIA's native backend (a session inside tritonserver, no process). A
    precision measured on the stand-in only counts at the stand-in's figure: an upper bound
    (the native backend saves the process)."""

    def memory(self, native: bool, quantize: str | None) -> Footprint:
        """One instance's footprint on the native backends (`native`) or the stand-ins, at the
        precision `quantize` (a method this format has no figure for counts at full precision)."""
        table = self.native_memory if native else self.standin_memory
        found = table.get(quantize) or self.standin_memory.get(quantize) or table.get(None)
        return found or self.standin_memory[None]

    @abstractmethod
    def tensor_names(self, model_kind: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Input and output tensor names inside the file for a model kind (`GRAPH_OUTPUTS`' keys)."""

    def inputs(self, model_kind: str) -> tuple[TensorPlan, ...]:
        """The model's inputs in the config (default: padded INT64 token tensors, dims [-1])."""
        return tuple(TensorPlan(name, "TYPE_INT64", (-1,)) for name in self.tensor_names(model_kind)[0])

    def batch_inputs(self) -> tuple[BatchInputPlan, ...]:
        """Tensors the backend computes from the batch (`batch_input`), none by default."""
        return ()

    def code_files(self) -> tuple[Path, ...]:
        """Files of this project whose code shapes the exported file (hashed into its cache key)."""
        return ()

    def export(
        self,
        builder: Builder,
        settings: Any,
        preprocessing: PreprocessingSettings,
        output: Path,
        head: ClassifierHead | None,
    ) -> None:
        """Write the file of a builder's `settings` (default: export its padded torch module);
        `head`: a classifier's tail (`Builder.head`), None for an embedding."""
        self.export_module(builder.padded_module(settings, preprocessing), output, head)

    def export_module(self, module: Any, output: Path, head: ClassifierHead | None) -> None:
        """Write a padded torch module (`input_ids`, `attention_mask` -> one float output) in this
        format; `head`: a classifier's tail after its `logits`."""
        raise NotImplementedError(f"format {self.name} cannot export a torch module")

    quantize_methods: ClassVar[tuple[str, ...]] = ()
    """`model.quantize` methods this format can apply to a built file (none: the spec is rejected)."""

    def quantize(self, method: str, source: Path, output: Path, per_channel: bool) -> None:
        """Write the `method`-quantized copy of the built file `source` to `output`."""
        raise NotImplementedError(f"format {self.name} cannot be quantized")

    def example_inputs(
        self, ids: np.ndarray, mask: np.ndarray, token_types: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """The file's inputs for texts tokenized padded (`ids`, `mask`: [texts, tokens]; a
        reranker's pairs also `token_types`), as one batch the way the backend would feed it
        (quantization's fidelity gate runs them)."""
        raise NotImplementedError(f"format {self.name} has no example inputs")

    def runner(self, path: Path, threads: int) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
        """A function running the file on inputs as `example_inputs` makes them, every output by
        name, with `threads` intra-op threads as the backend configures them (the fidelity gate)."""
        raise NotImplementedError(f"format {self.name} has no runner")

    @abstractmethod
    def parameters(self, threads: int) -> dict[str, str]:
        """The backend's config parameters for `threads` intra-op threads per instance."""

    @abstractmethod
    def check(self, path: Path, config: mc.ModelConfig) -> list[str]:
        """Problems between a built file and its config (empty when they agree)."""
