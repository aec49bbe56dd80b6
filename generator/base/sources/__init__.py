"""The files a spec names, as a registry of source kinds; and the spec building blocks every
layer shares (`StrictModel`).

A spec names a file or folder as one of `SOURCE_KINDS`, chosen by the key its mapping holds:
`{package, path}` inside an installed Python package, `{file}` inside this project, or
`{folder, path, digest}` anywhere on this machine, or `{recipe, path}` made by a script of the
project (a seeded fine-tune). `resolve_source` turns any of them into a
local path and `source_digest` into a content digest (`digest.py`). A new kind (a model store
fetched by a command beforehand) is one module plus an entry in `SOURCE_KINDS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias, Union

from pydantic import Discriminator, Tag

from generator.base.sources.base import (
    ArtifactError,
    SourceKind,
    SourceSettings,
    StrictModel,
    check_relative_path,
)
from generator.base.sources.digest import DIGEST_PATTERN, file_sha256, path_digest
from generator.base.sources.folder import Folder, FolderSource
from generator.base.sources.package import PACKAGE_PATTERN, Package, PackageFile
from generator.base.sources.project import Project, ProjectFile
from generator.base.sources.recipe import Recipe, RecipeSource

__all__ = [
    "DIGEST_PATTERN",
    "PACKAGE_PATTERN",
    "SOURCE_KINDS",
    "SOURCE_TAGS",
    "ArtifactError",
    "FolderSource",
    "PackageFile",
    "ProjectFile",
    "RecipeSource",
    "Source",
    "SourceKind",
    "SourceSettings",
    "StrictModel",
    "check_relative_path",
    "file_sha256",
    "path_digest",
    "resolve_source",
    "source_digest",
    "source_kind",
]

SOURCE_KINDS: dict[str, SourceKind] = {kind.name: kind for kind in (Package(), Project(), Folder(), Recipe())}
"""Every source kind by name; a spec's source mapping selects one by its key (`SourceKind.key`)."""

_BY_SETTINGS: dict[type[SourceSettings], SourceKind] = {kind.settings: kind for kind in SOURCE_KINDS.values()}
SOURCE_TAGS = frozenset(kind.settings.__name__ for kind in SOURCE_KINDS.values())
"""The branch names of the `Source` union (settings class names), as validation errors' locations
carry them: not fields."""


def _source_tag(value: Any) -> str | None:
    """The settings class name of a source mapping (by its key) or object; None: no kind's."""
    if isinstance(value, dict):
        return next((kind.settings.__name__ for kind in SOURCE_KINDS.values() if kind.key in value), None)
    kind = _BY_SETTINGS.get(type(value))
    return kind.settings.__name__ if kind is not None else None


if TYPE_CHECKING:  # what every kind's settings have in common
    Source: TypeAlias = SourceSettings
else:
    Source = Annotated[
        Union[tuple(Annotated[kind.settings, Tag(kind.settings.__name__)] for kind in SOURCE_KINDS.values())],  # noqa: UP007
        Discriminator(
            _source_tag,
            custom_error_type="source_kind",
            custom_error_message="expected a source mapping with one of the keys "
            + ", ".join(f"`{kind.key}` ({kind.settings.__name__})" for kind in SOURCE_KINDS.values()),
        ),
    ]
    """A file or folder a spec names: the settings of one of `SOURCE_KINDS`, chosen by its key."""


def source_kind(source: SourceSettings) -> SourceKind:
    """The kind of a source's settings."""
    return _BY_SETTINGS[type(source)]


def resolve_source(source: SourceSettings) -> Path:
    """The local path of a source (ArtifactError when it does not exist)."""
    return source_kind(source).resolve(source)


def source_digest(source: SourceSettings) -> str:
    """`sha256:<hex>`: the content digest of a source (`digest.py`). A folder source's covers
    its whole `folder`, whatever its `path`; the others' the file or folder they name.
    ArtifactError when it does not exist or cannot be read."""
    kind = source_kind(source)
    root = kind.digest_root(source)
    try:
        return path_digest(root)
    except OSError as error:
        raise ArtifactError(f"{kind.describe(source)}: cannot be read: {error}") from None
