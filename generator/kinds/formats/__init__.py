"""Inference formats: how a model version's network is stored and served.

An `InferenceFormat` owns everything that depends on the format: the file name in the version
folder, the tensor names inside the file, the Triton backend (NVIDIA's name, on every target),
the backend's config parameters for a thread count, and the check of a built file against
its config. Adding a format is one module with one `InferenceFormat` subclass and an entry
in `FORMATS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from generator.errors import TritongenError

if TYPE_CHECKING:
    import numpy as np
    from tritonclient.grpc import model_config_pb2 as mc

    from generator.pipeline.plan import BatchInputPlan, TensorPlan
    from generator.pipeline.spec import ModelArtifact, Preprocessing


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
    """Whether classifier artifacts (logits and a string label) can be built in this format."""
    ragged: ClassVar[bool] = False
    """Inputs are unpadded token streams (Triton's ragged batching): the preprocessing must not
    pad (`padding: none`), every request of any length batches with every other."""
    ragged_variant: ClassVar[str | None] = None
    """The ragged format that serves this format's builders unpadded (`tune` measures it)."""

    @abstractmethod
    def tensor_names(self, model_kind: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Input and output tensor names inside the file for a model kind (embedding, classifier)."""

    def inputs(self, model_kind: str) -> tuple[TensorPlan, ...]:
        """The model's inputs in the config (default: padded INT64 token tensors, dims [-1])."""
        from generator.pipeline.plan import TensorPlan

        return tuple(TensorPlan(name, "TYPE_INT64", (-1,)) for name in self.tensor_names(model_kind)[0])

    def batch_inputs(self) -> tuple[BatchInputPlan, ...]:
        """Tensors the backend computes from the batch (`batch_input`), none by default."""
        return ()

    def export(self, artifact: ModelArtifact, preprocessing: Preprocessing, output: Path) -> bool:
        """Write the file for a builder, or return False to use the padded builders of `artifacts`."""
        return False

    quantize_methods: ClassVar[tuple[str, ...]] = ()
    """`model.quantize` methods this format can apply to a built file (none: the spec is rejected)."""

    def quantize(self, method: str, source: Path, output: Path, per_channel: bool) -> None:
        """Write the `method`-quantized copy of the built file `source` to `output`."""
        raise NotImplementedError(f"format {self.name} cannot be quantized")

    def example_inputs(self, ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """The file's inputs for texts tokenized padded (`ids`, `mask`: [texts, tokens]), as one
        batch the way the backend would feed it (quantization's fidelity gate runs them)."""
        raise NotImplementedError(f"format {self.name} has no example inputs")

    @abstractmethod
    def parameters(self, threads: int) -> dict[str, str]:
        """The backend's config parameters for `threads` intra-op threads per instance."""

    @abstractmethod
    def check(self, path: Path, config: mc.ModelConfig) -> list[str]:
        """Problems between a built file and its config (empty when they agree)."""


def _registry() -> dict[str, InferenceFormat]:
    from generator.kinds.formats.onnx import Onnx
    from generator.kinds.formats.ragged import OnnxRagged, TorchScriptRagged
    from generator.kinds.formats.torchscript import TorchScript

    return {kind.name: kind for kind in (Onnx(), TorchScript(), OnnxRagged(), TorchScriptRagged())}


FORMATS: dict[str, InferenceFormat] = _registry()
"""Every inference format by its spec name."""


def get_format(name: str) -> InferenceFormat:
    """The format called `name`, or an error listing the known ones."""
    try:
        return FORMATS[name]
    except KeyError:
        raise UnknownFormatError(f"unknown model format {name!r}: use one of {', '.join(FORMATS)}") from None


def format_for_config(config: mc.ModelConfig) -> InferenceFormat | None:
    """The format of an inference model's config (backend, file name, ragged inputs)."""
    ragged = any(tensor.allow_ragged_batch for tensor in config.input)
    for kind in FORMATS.values():
        if (kind.backend, kind.filename, kind.ragged) == (config.backend, config.default_model_filename, ragged):
            return kind
    return None
