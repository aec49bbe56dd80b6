"""The generated spec reference: docs/spec.md is current, and every spec field is documented."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field

from generator.base.sources import StrictModel
from generator.pipeline.spec import ModelSpec
from generator.pipeline.spec_reference import COMMAND, REFERENCE_PATH, main, render_reference, spec_types, undocumented


def test_docs_spec_md_is_generated_from_the_models() -> None:
    assert REFERENCE_PATH.read_text(encoding="utf-8") == render_reference(), (
        f"docs/spec.md is out of date: run `{COMMAND}`"
    )


def test_every_spec_model_and_field_has_a_docstring() -> None:
    assert undocumented() == [], "give each of these a docstring (attribute docstring under a field)"


def test_the_reference_reaches_every_nested_model_and_enum() -> None:
    names = {kind.__name__ for kind in spec_types()}
    assert {"ModelSpec", "Version", "TextPrepSettings", "PackageFile", "ProjectFile", "FolderSource"} <= names
    assert "ModelArtifact" in names
    assert {"EmbeddingBuild", "PrototypeClassifierBuild", "FileBuild", "Quantize", "Outputs"} <= names
    assert {"Batching", "BulkBatching", "Instances", "Casing", "Padding"} <= names
    assert spec_types()[ModelSpec] == [""]


def test_the_reference_shows_types_defaults_constraints_and_docstrings() -> None:
    text = render_reference()
    assert text.startswith("# Model spec reference\n")
    assert "`models/<name>.yaml`" in text and COMMAND in text
    assert "| `max_batch_size` | integer; at least 1, at most 1024 | `32` |" in text
    assert "one of [EmbeddingBuild](#embeddingbuild), [PrototypeClassifierBuild](#prototypeclassifierbuild)" in text
    assert "chosen by its `builder`" in text
    assert "| `casing` | [Casing](#casing) | `keep` |" in text
    assert "| `lowercase` | BERT normalizer, lowercasing (uncased vocabularies). |" in text
    assert "matching `^[a-z][a-z0-9_]*$`" in text
    assert "Where: `versions[].preprocessing.tokenizer`, `versions[].model.build.source`." in text
    assert "| `tokenizer` | one of [PackageFile](#packagefile), [ProjectFile](#projectfile), [FolderSource]" in text
    assert "(#recipesource), chosen by the key it holds | required |" in text and "Discriminator" not in text
    assert render_reference() == text  # deterministic


class _Color(StrEnum):
    """A color."""

    RED = "red"
    """Warm."""
    BLUE = "blue"


class _Leaf(StrictModel):
    """A leaf."""

    size: int = Field(default=2, ge=1)
    """Its size."""
    color: _Color = _Color.RED
    tags: tuple[str, ...] = ()
    """Its tags."""


class _Root(StrictModel):
    """A root."""

    mode: Literal["a", "b"] = "a"
    """Its mode."""
    leaves: dict[str, _Leaf] = {}
    """Its leaves."""


def test_a_new_undocumented_field_is_reported() -> None:
    assert undocumented(_Root) == ["_Leaf.color"]


def test_nested_mappings_enums_and_member_docs_render() -> None:
    text = render_reference(_Root)
    assert "Where: `leaves.<key>`." in text
    assert "| `mode` | `a` or `b` | `a` |" in text
    assert "| `size` | integer; at least 1 | `2` | Its size. |" in text
    assert "| `red` | Warm. |" in text and "| `blue` |  |" in text


def test_main_writes_and_checks(tmp_path: Path) -> None:
    path = tmp_path / "spec.md"
    assert main(["--check"], path) == 1  # missing
    assert main([], path) == 0
    assert path.read_text(encoding="utf-8") == render_reference()
    assert main(["--check"], path) == 0
    path.write_text("edited by hand\n", encoding="utf-8")
    assert main(["--check"], path) == 1
