"""The errors of building an execution environment; each names the environment and the cause."""

from __future__ import annotations

from generator.errors import TritongenError


class EnvironmentSpecError(TritongenError, ValueError):
    """An environment spec is invalid or cannot work on the target (names env and cause)."""


class EnvironmentBuildError(TritongenError, RuntimeError):
    """An environment could not be built (names the environment and the failing step)."""
