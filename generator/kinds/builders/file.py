"""`file`: a prebuilt model file of the project, copied as is (its format must match the spec's)."""

from __future__ import annotations

from typing import Literal

from generator.base.spec_sources import ProjectFile
from generator.kinds.builders.base import Builder, BuildSettings


class FileBuild(BuildSettings):
    """A prebuilt artifact file of the project (copied as is)."""

    builder: Literal["file"]
    """Selects this builder."""
    source: ProjectFile
    """The artifact file (e.g. an `.onnx` or TorchScript `.pt` file) in the model's format."""


class File(Builder):
    name = "file"
    settings = FileBuild
    prebuilt = True
