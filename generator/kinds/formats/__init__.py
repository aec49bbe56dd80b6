"""Inference formats: how a model version's network is stored and served.

An `InferenceFormat` (`base.py`) owns everything that depends on the format: the file name in
the version folder, the tensor names inside the file, the Triton backend (NVIDIA's name, on
every target), the backend's config parameters for a thread count, exporting a builder's
model, quantizing and running the file (the fidelity gate), its memory per instance, and the
check of a built file against its config. Adding a format is one module with one
`InferenceFormat` subclass and an entry in `FORMATS`.
"""

from __future__ import annotations

from generator.kinds.formats.base import InferenceFormat, UnknownFormatError
from generator.kinds.formats.onnx import Onnx
from generator.kinds.formats.ragged import OnnxRagged, TorchScriptRagged
from generator.kinds.formats.torchscript import TorchScript

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


__all__ = ["FORMATS", "InferenceFormat", "UnknownFormatError", "get_format"]
