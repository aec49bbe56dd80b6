"""Inference formats: how a model version's network is stored and served.

An `InferenceFormat` (`base.py`) owns everything that depends on the format: the file name in
the version folder, the tensor names inside the file, the Triton backend (NVIDIA's name, on
every target), the backend's config parameters for a thread count, exporting a builder's
model, quantizing and running the file (the fidelity gate), its memory per instance, and the
check of a built file against its config. Adding a format is one module with one
`InferenceFormat` subclass and an entry in `FORMATS`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from generator.kinds.formats.base import InferenceFormat, UnknownFormatError
from generator.kinds.formats.onnx import Onnx
from generator.kinds.formats.ragged import OnnxRagged, TorchScriptRagged
from generator.kinds.formats.torchscript import TorchScript

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2 as mc

FORMATS: dict[str, InferenceFormat] = {
    inference_format.name: inference_format
    for inference_format in (Onnx(), TorchScript(), OnnxRagged(), TorchScriptRagged())
}
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
    wanted = (config.backend, config.default_model_filename, ragged)
    for inference_format in FORMATS.values():
        if (inference_format.backend, inference_format.filename, inference_format.ragged) == wanted:
            return inference_format
    return None


__all__ = ["FORMATS", "InferenceFormat", "UnknownFormatError", "format_for_config", "get_format"]
