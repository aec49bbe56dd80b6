"""The shipped recipes are deterministic: run again, each writes the bytes of its cached folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from generator import PROJECT_ROOT
from generator.base.sources.recipe import RECIPE_SCRIPT, build_recipe, run_recipe

pytestmark = pytest.mark.integration

RECIPES = sorted(path.parent.name for path in (PROJECT_ROOT / "models" / "recipes").glob(f"*/{RECIPE_SCRIPT}"))


def test_every_shipped_model_folder_has_a_recipe() -> None:
    assert RECIPES == ["course_reranker", "feedback_sentiment"]


def test_a_second_run_of_a_recipe_writes_the_same_bytes(tmp_path: Path) -> None:
    """The fine-tuned classifier's recipe (the cross-encoder's, built the same way, takes twice as
    long: checked by hand, not in the suite)."""
    recipe = PROJECT_ROOT / "models" / "recipes" / "feedback_sentiment"
    first = build_recipe(recipe)  # the cached folder (generate's), built now when missing
    second = tmp_path / "again"
    run = run_recipe(recipe, second)
    assert run.returncode == 0, run.stdout + run.stderr
    files = sorted(path.relative_to(first) for path in first.rglob("*") if path.is_file())
    assert files == sorted(path.relative_to(second) for path in second.rglob("*") if path.is_file())
    assert "model.safetensors" in {file.name for file in files}
    different = [str(file) for file in files if (first / file).read_bytes() != (second / file).read_bytes()]
    assert different == []
