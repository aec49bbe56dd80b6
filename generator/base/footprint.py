"""A measured memory footprint: the figure and how it was measured (the kinds keep theirs)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Footprint:
    """Memory of one thing a repository runs (a server, an instance), as measured."""

    mib: float
    """Proportional set size (PSS, `/proc/<pid>/smaps_rollup`) in MiB."""
    measured: str
    """How, where and on what the figure was measured (the footprint table of docs/operations.md)."""
