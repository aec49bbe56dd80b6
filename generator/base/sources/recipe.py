"""`recipe`: a model folder made by a script of the project (e.g. a seeded fine-tune), built
once on first use and cached in build/recipes/; weights built, not committed.

A recipe is a project folder holding `recipe.py` (run as `python recipe.py OUTPUT_FOLDER`) and
whatever it reads (its labelled examples). The built folder is named by the content digest of
the recipe folder and the versions of the libraries that train (a change to either builds it
again); the spec's recorded digest is the recipe folder's, the same on every machine, where
the trained bytes may differ in their last bits across CPUs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import field_validator

from generator import PROJECT_ROOT
from generator.base.sources.base import ArtifactError, SourceKind, SourceSettings, check_relative_path
from generator.base.sources.digest import path_digest

RECIPES_DIR = PROJECT_ROOT / "build" / "recipes"
"""Where built recipe folders are cached (`<recipe name>-<digest>`)."""
RECIPE_SCRIPT = "recipe.py"
TRAINING_LIBRARIES = ("torch", "transformers", "accelerate", "tokenizers", "safetensors")
"""Their versions are part of a built folder's name: an upgrade trains again."""
RECIPE_TIMEOUT_S = 1800


class RecipeSource(SourceSettings):
    """A folder made by a recipe of the project (`<recipe>/recipe.py OUTPUT_FOLDER`), or one
    file inside it; built on first use and cached in build/recipes/."""

    recipe: str
    """The recipe folder, relative to the project root (no `..`), holding `recipe.py` and what it
    reads, e.g. `models/recipes/feedback_sentiment`."""
    path: str = ""
    """A file inside the built folder (relative, no `..`), e.g. `tokenizer.json`; empty
    (default): the built folder itself."""

    _recipe = field_validator("recipe")(classmethod(lambda cls, v: check_relative_path(v)))

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return value if value == "" else check_relative_path(value)


def built_folder(recipe_dir: Path) -> Path:
    """The cache folder of a recipe's output: named by its folder's digest and library versions."""
    key = hashlib.sha256(path_digest(recipe_dir).encode())
    for library in TRAINING_LIBRARIES:
        try:
            key.update(f"{library}=={metadata.version(library)}".encode())
        except metadata.PackageNotFoundError:
            key.update(f"{library} missing".encode())
    return RECIPES_DIR / f"{recipe_dir.name}-{key.hexdigest()[:16]}"


def run_recipe(recipe_dir: Path, output: Path) -> subprocess.CompletedProcess[str]:
    """Run `recipe_dir/recipe.py OUTPUT` offline, its output captured (subprocess.TimeoutExpired
    after RECIPE_TIMEOUT_S)."""
    return subprocess.run(
        [sys.executable, str(recipe_dir / RECIPE_SCRIPT), str(output)],
        cwd=recipe_dir,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=RECIPE_TIMEOUT_S,
        check=False,
    )


def build_recipe(recipe_dir: Path) -> Path:
    """The recipe's built folder, running `recipe.py` first when it is not cached (atomic: a
    failed or interrupted run leaves nothing under its name)."""
    target = built_folder(recipe_dir)
    if target.is_dir():
        return target
    RECIPES_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=RECIPES_DIR))
    output = work / "output"
    print(f"recipe {recipe_dir.relative_to(PROJECT_ROOT)}: building {target.name} (once; cached)", file=sys.stderr)
    try:
        run = run_recipe(recipe_dir, output)
        if run.returncode != 0 or not output.is_dir():
            tail = "\n".join((run.stdout + run.stderr).strip().splitlines()[-15:])
            raise ArtifactError(f"recipe {recipe_dir}: {RECIPE_SCRIPT} failed (exit {run.returncode}):\n{tail}")
        try:
            output.rename(target)
        except OSError:
            if not target.is_dir():  # another process built it meanwhile: keep theirs
                raise
    except subprocess.TimeoutExpired:
        raise ArtifactError(f"recipe {recipe_dir}: {RECIPE_SCRIPT} ran over {RECIPE_TIMEOUT_S} s") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


class Recipe(SourceKind):
    name = "recipe"
    key = "recipe"
    settings = RecipeSource

    def recipe_dir(self, settings: Any) -> Path:
        """The recipe folder in the project."""
        return PROJECT_ROOT / settings.recipe

    def locate(self, settings: Any) -> Path:
        problem = self.missing(settings)
        if problem is not None:
            raise ArtifactError(problem)
        built = build_recipe(self.recipe_dir(settings))
        return built / settings.path if settings.path else built

    def describe(self, settings: Any) -> str:
        where = f"recipe {settings.recipe!r}"
        return f"{settings.path!r} of {where}" if settings.path else where

    def missing(self, settings: Any) -> str | None:
        script = self.recipe_dir(settings) / RECIPE_SCRIPT
        return None if script.is_file() else f"recipe {settings.recipe!r} has no {RECIPE_SCRIPT} ({script})"

    def resolve(self, settings: Any) -> Path:
        path = self.locate(settings)
        if not path.exists():
            raise ArtifactError(f"{self.describe(settings)}: the recipe did not write {settings.path!r} ({path})")
        return path

    def digest_root(self, settings: Any) -> Path:
        """The recipe folder: the digest pins what the folder is made from, the same on every machine."""
        if self.missing(settings) is not None:
            self.resolve(settings)
        return self.recipe_dir(settings)
