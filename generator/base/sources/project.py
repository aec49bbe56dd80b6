"""`project`: a file or folder of this project, relative to the project root."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import field_validator

from generator import PROJECT_ROOT
from generator.base.sources.base import SourceKind, SourceSettings, check_relative_path


class ProjectFile(SourceSettings):
    """A file of this project, relative to the project root."""

    file: str
    """Path relative to the project root (no `..`), e.g. `artifacts/model.onnx`."""

    _relative = field_validator("file")(classmethod(lambda cls, v: check_relative_path(v)))


class Project(SourceKind):
    name = "project"
    key = "file"
    settings = ProjectFile

    def locate(self, settings: Any) -> Path:
        return PROJECT_ROOT / settings.file

    def describe(self, settings: Any) -> str:
        return f"project file {settings.file!r}"

    def missing(self, settings: Any) -> str | None:
        return None if self.locate(settings).exists() else f"{self.describe(settings)} does not exist"
