"""`file`: a prebuilt model file (any source kind), copied as is (its format must match the spec's)."""

from __future__ import annotations

from typing import Literal

from generator.base.sources import Source
from generator.kinds.builders.base import Builder, BuildSettings


class FileBuild(BuildSettings):
    """A prebuilt artifact file (copied as is): in the project, a package or a folder of your own."""

    builder: Literal["file"]
    """Selects this builder."""
    source: Source
    """The artifact file (e.g. an `.onnx` or TorchScript `.pt` file) in the model's format."""


class File(Builder):
    name = "file"
    settings = FileBuild
    prebuilt = True
