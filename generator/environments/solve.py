"""Solving an environment's conda part with py-rattler, and the full pre-build check of a spec."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from generator.environments import channel as conda_channel
from generator.environments.envspec import (
    BACKENDS_DIR,
    EnvironmentSpec,
    check_spec_for_stub,
    parse_environment_spec,
)
from generator.environments.errors import EnvironmentSpecError
from generator.environments.stubs import resolve_stub


def solve_environment(spec: EnvironmentSpec, channels: Sequence[str]) -> list[Any]:
    """The conda records (rattler `RepoDataRecord`s) the spec's conda part solves to from `channels`."""
    from rattler import solve
    from rattler.exceptions import SolverError

    try:
        records: list[Any] = conda_channel.run_rattler(
            solve(
                sources=list(channels),
                specs=list(spec.conda),
                platforms=[conda_channel.PLATFORM, "noarch"],  # type: ignore[list-item]
                virtual_packages=[],
            )
        )
    except SolverError as error:
        raise EnvironmentSpecError(
            f"environment {spec.name!r}: the conda dependencies {list(spec.conda)} cannot be "
            f"solved from channels {list(channels)}:\n{error}"
        ) from error
    except Exception as error:  # noqa: BLE001 - rattler raises several network/IO types
        raise EnvironmentSpecError(
            f"environment {spec.name!r}: cannot read channels {list(channels)}: "
            f"{type(error).__name__}: {error}\n(offline? build a local channel with "
            "`tritongen envs channel`: the project then uses it)"
        ) from error
    return records


def check_environment_spec(
    spec_path: Path,
    target_python: str,
    *,
    channels: Sequence[str] | None = None,
    backends_dir: Path = BACKENDS_DIR,
    ship_stub: bool = False,
) -> None:
    """Raise `EnvironmentSpecError` if the spec cannot work on the target.

    Checks the stub's Python version (any version with a bundled stub when `ship_stub`:
    the model then carries its own stub, see `place_stub`), `numpy<2` (2.51 stub), the pins
    of `backends/` packages, and, when `channels` is given, that the conda part solves.
    """
    spec = parse_environment_spec(spec_path)
    check_spec_for_stub(spec, resolve_stub(target_python), backends_dir, ship_stub)
    if channels is not None:
        solve_environment(spec, channels)
