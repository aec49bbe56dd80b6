"""`folder`: a user's own checkpoint folder, in the project or anywhere on this machine
(a mounted model store), optionally pinned to its content digest."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import Field, field_validator

from generator import PROJECT_ROOT
from generator.base.sources.base import SourceKind, SourceSettings, check_relative_path
from generator.base.sources.digest import DIGEST_PATTERN


class FolderSource(SourceSettings):
    """A folder of model files (e.g. a `save_pretrained` or sentence-transformers checkpoint),
    or one file inside it; `digest` pins the whole folder's content."""

    folder: str
    """The folder: an absolute path (anywhere on the machine that generates, e.g. a mounted
    model store `/mnt/models/bert-topics`) or a path relative to the project root (no `..`)."""
    path: str = ""
    """A file or folder inside `folder` (relative, no `..`), e.g. `tokenizer.json`; empty
    (default): the folder itself."""
    digest: str | None = Field(default=None, pattern=DIGEST_PATTERN)
    """`sha256:<64 hex>`, the content digest of the whole `folder` (not only `path`: a model
    and its tokenizer from one folder carry the same digest): every file's relative path, size
    and bytes, hidden files and folders (`.git`, `.cache`) skipped. Specs fail to load when
    the folder's content differs. `tritongen add` writes it; None: not pinned (the manifest
    still records the digest, so `tritongen check` reports changed weights)."""

    @field_validator("folder")
    @classmethod
    def _folder(cls, value: str) -> str:
        if value.startswith("~"):
            raise ValueError(f"`~` is not expanded: write the absolute path, got {value!r}")
        if PurePosixPath(value).is_absolute():
            if ".." in PurePosixPath(value).parts or "\\" in value:
                raise ValueError(f"must be an absolute path without '..', got {value!r}")
            return value
        return check_relative_path(value)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return value if value == "" else check_relative_path(value)


class Folder(SourceKind):
    name = "folder"
    key = "folder"
    settings = FolderSource

    def root(self, settings: Any) -> Path:
        """The folder (absolute, or under the project root)."""
        return PROJECT_ROOT / settings.folder  # an absolute `folder` replaces the root

    def locate(self, settings: Any) -> Path:
        root = self.root(settings)
        return root / settings.path if settings.path else root

    def describe(self, settings: Any) -> str:
        return f"{settings.path!r} in folder {settings.folder!r}" if settings.path else f"folder {settings.folder!r}"

    def missing(self, settings: Any) -> str | None:
        root = self.root(settings)
        if not root.exists():
            return f"folder {settings.folder!r} does not exist ({root})"
        if not root.is_dir():
            return f"{settings.folder!r} is not a folder ({root})"
        path = self.locate(settings)
        return None if path.exists() else f"{settings.path!r} is not in folder {settings.folder!r} ({path})"

    def digest_root(self, settings: Any) -> Path:
        self.resolve(settings)
        return self.root(settings)

    def pinned_digest(self, settings: Any) -> str | None:
        return settings.digest
