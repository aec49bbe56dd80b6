"""Folder sources: a checkpoint folder in the project or anywhere, its paths kept inside it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from generator import PROJECT_ROOT
from generator.base.sources import ArtifactError, FolderSource, resolve_source, source_digest
from generator.base.sources.digest import path_digest


def test_a_folder_outside_the_project_resolves_by_its_absolute_path(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text("{}", encoding="utf-8")
    assert resolve_source(FolderSource(folder=str(tmp_path))) == tmp_path
    assert resolve_source(FolderSource(folder=str(tmp_path), path="tokenizer.json")) == tmp_path / "tokenizer.json"


def test_a_relative_folder_is_inside_the_project() -> None:
    source = FolderSource(folder="models", path="minilm_embed.yaml")
    assert resolve_source(source) == PROJECT_ROOT / "models" / "minilm_embed.yaml"
    assert source_digest(source) == path_digest(PROJECT_ROOT / "models")


def test_the_digest_covers_the_whole_folder_whatever_the_path(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text("{}", encoding="utf-8")
    (tmp_path / "model.onnx").write_bytes(b"weights")
    tokenizer = FolderSource(folder=str(tmp_path), path="tokenizer.json")
    model = FolderSource(folder=str(tmp_path), path="model.onnx")
    assert source_digest(tokenizer) == source_digest(model) == source_digest(FolderSource(folder=str(tmp_path)))
    (tmp_path / "model.onnx").write_bytes(b"weightz")
    assert source_digest(tokenizer) == path_digest(tmp_path)  # a weight changed: the tokenizer's digest too


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"folder": "../outside"}, "must be a relative path without '..'"),
        ({"folder": "/mnt/models/../../etc"}, "must be an absolute path without '..'"),
        ({"folder": "~/models"}, "`~` is not expanded"),
        ({"folder": ""}, "must be a relative path"),
        ({"folder": "/mnt/models", "path": "../secret"}, "must be a relative path without '..'"),
        ({"folder": "/mnt/models", "path": "/etc/passwd"}, "must be a relative path"),
        ({"folder": "/mnt/models", "digest": "sha256:abc"}, "String should match pattern"),
        ({"folder": "/mnt/models", "digest": "md5:" + "0" * 64}, "String should match pattern"),
        ({"folder": "/mnt/models", "file": "x"}, "Extra inputs are not permitted"),
    ],
)
def test_paths_that_leave_their_root_and_bad_digests_are_refused(settings: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        FolderSource.model_validate(settings)


def test_a_missing_folder_or_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=f"folder '{tmp_path}/nope' does not exist"):
        resolve_source(FolderSource(folder=str(tmp_path / "nope")))
    with pytest.raises(ArtifactError, match=f"'tokenizer.json' is not in folder '{tmp_path}'"):
        source_digest(FolderSource(folder=str(tmp_path), path="tokenizer.json"))
    (tmp_path / "file").write_text("", encoding="utf-8")
    with pytest.raises(ArtifactError, match="is not a folder"):
        resolve_source(FolderSource(folder=str(tmp_path / "file")))
