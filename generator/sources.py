"""What counts as source: the one rule every content hash of project files uses.

Environment names (the local packages they install) and the image tag (backends and
packages copied into it) hash the same files, so they agree on what changed.
"""

from __future__ import annotations

from pathlib import Path

SKIPPED_PARTS = frozenset({"__pycache__", "build", "dist", ".pytest_cache", ".mypy_cache", ".ruff_cache"})
"""Folders that hold caches or build outputs, never sources."""


def source_files(root: Path) -> list[Path]:
    """Files under `root` that are sources (no caches, build outputs, egg-info or bytecode), sorted."""
    if not root.is_dir():
        return []
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file()
        and path.suffix != ".pyc"
        and not any(part in SKIPPED_PARTS or part.endswith(".egg-info") for part in path.relative_to(root).parts)
    )
