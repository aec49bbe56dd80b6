"""The `recipe` source: a project script's folder, built once on first use and cached."""

from __future__ import annotations

from pathlib import Path

import pytest

from generator.base.sources import ArtifactError, RecipeSource, resolve_source, source_digest
from generator.base.sources import recipe as recipe_module
from generator.base.sources.digest import path_digest

SCRIPT = """
import pathlib, sys
here = pathlib.Path(__file__).parent
out = pathlib.Path(sys.argv[1])
out.mkdir()
(out / "weights.bin").write_bytes((here / "data.txt").read_bytes() * 2)
with open(here.parent / "runs.log", "a") as log:
    log.write("run\\n")
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project root with one recipe (`recipes/demo`), its built folders cached under it."""
    monkeypatch.setattr(recipe_module, "PROJECT_ROOT", tmp_path)
    monkeypatch.setattr(recipe_module, "RECIPES_DIR", tmp_path / "build" / "recipes")
    folder = tmp_path / "recipes" / "demo"
    folder.mkdir(parents=True)
    (folder / "recipe.py").write_text(SCRIPT, encoding="utf-8")
    (folder / "data.txt").write_text("abc", encoding="utf-8")
    return tmp_path


def runs(project: Path) -> int:
    log = project / "recipes" / "runs.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_built_once_then_cached_and_rebuilt_when_the_recipe_changes(project: Path) -> None:
    source = RecipeSource(recipe="recipes/demo", path="weights.bin")
    built = resolve_source(source)
    assert built.read_text() == "abcabc" and runs(project) == 1
    assert resolve_source(source) == built and runs(project) == 1  # cached
    assert source_digest(source) == path_digest(project / "recipes" / "demo")  # what it is made from
    (project / "recipes" / "demo" / "data.txt").write_text("xyz", encoding="utf-8")
    rebuilt = resolve_source(source)
    assert rebuilt != built and rebuilt.read_text() == "xyzxyz" and runs(project) == 2
    assert [p.name for p in (project / "build" / "recipes").iterdir() if p.name.startswith(".")] == []


def test_a_failing_recipe_says_why_and_leaves_nothing(project: Path) -> None:
    (project / "recipes" / "demo" / "recipe.py").write_text("raise SystemExit('no base model here')\n")
    with pytest.raises(ArtifactError, match="recipe.py failed .exit 1.:\nno base model here"):
        resolve_source(RecipeSource(recipe="recipes/demo"))
    assert list((project / "build" / "recipes").iterdir()) == []


def test_a_recipe_without_its_script_is_missing(project: Path) -> None:
    with pytest.raises(ArtifactError, match="recipe 'recipes/other' has no recipe.py"):
        resolve_source(RecipeSource(recipe="recipes/other"))
    with pytest.raises(ValueError, match="without '..'"):
        RecipeSource(recipe="../outside")
