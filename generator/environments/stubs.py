"""The python backend stub an environment runs under: each target server's stub, its Python,
and the stub a model folder ships when its environment uses another Python."""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from generator.base.triton import find_triton
from generator.environments.errors import EnvironmentBuildError, EnvironmentSpecError
from generator.kinds.targets import TARGETS, TRITON_VERSION

SHIPPABLE_STUBS = ("3.8", "3.9", "3.10", "3.11", "3.12", "3.13")
"""Python versions whose stub the nvidia-pytriton wheel bundles (`python_backend_stubs/3.X`)."""


@dataclass(frozen=True)
class PythonStub:
    """A python backend stub: the one a target server runs environments with, or one of a
    Python minor version."""

    name: str
    python: str
    triton: str
    numpy_below_2: bool
    source: str


def _server_stubs() -> dict[str, PythonStub]:
    """Every target server's stub, by the target's name and by the stub's own (`ngc-24.10`)."""
    stubs: dict[str, PythonStub] = {}
    for target in TARGETS.values():
        stub = PythonStub(target.stub_name, target.server_stub_python, TRITON_VERSION, True, target.stub_source)
        stubs.setdefault(target.name, stub)
        stubs.setdefault(stub.name, stub)
    return stubs


SERVER_STUBS: Mapping[str, PythonStub] = _server_stubs()
"""The stub of every generator target (`Target.server_stub_python`; `ngc` is the 24.10 image the
generator targets); Triton 2.51's stub is built against numpy 1.x on every target."""


def resolve_stub(target_python: str) -> PythonStub:
    """The stub of a target (`local`), a stub name (`ngc-24.10`) or a Python minor version (`3.11`)."""
    if target_python in SERVER_STUBS:
        return SERVER_STUBS[target_python]
    if re.fullmatch(r"3\.\d+", target_python):
        return PythonStub(target_python, target_python, TRITON_VERSION, True, f"a Python {target_python} stub")
    raise EnvironmentSpecError(
        f"unknown target {target_python!r}: use a Python minor version (3.11) or one of {sorted(SERVER_STUBS)}"
    )


def shipped_stub_libraries() -> list[Path]:
    """Libraries a bundled stub needs when it runs outside the wheel (its RPATH is relative)."""
    libraries = sorted(find_triton().libs_dir.glob("libcudart-*.so*"))
    if not libraries:
        raise EnvironmentBuildError("nvidia_pytriton.libs has no libcudart-*.so* for the stub")
    return libraries


def place_stub(model_dir: Path, python_minor: str) -> Path:
    """Copy the python backend stub of `python_minor` to `<model_dir>/triton_python_backend_stub`.

    The python backend prefers this stub over its own for the model; the environment (built
    with `ship_stub=True`) supplies libpython and libcudart through `<env>/lib`.
    """
    stub = find_triton().stub(python_minor)
    if not stub.is_file():
        raise EnvironmentSpecError(f"no python backend stub for Python {python_minor}: {stub}")
    placed = model_dir / "triton_python_backend_stub"
    shutil.copy2(stub, placed)
    placed.chmod(0o755)
    return placed
