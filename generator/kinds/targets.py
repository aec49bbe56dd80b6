"""Targets: the servers a generated repository is deployed to.

Both targets get the SAME model files (backend names of NVIDIA's image, environments that
ship their own stub): what the tests serve is what users deploy. They differ in the server
that runs them and the image the deploy files start.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from generator.errors import TritongenError

TRITON_RELEASE = "24.10"
"""NVIDIA's container release the repository is made for."""
TRITON_VERSION = "2.51.0"
"""The tritonserver version of that release (also the one bundled by nvidia-pytriton 0.7.0)."""
NGC_IMAGE = f"nvcr.io/nvidia/tritonserver:{TRITON_RELEASE}-py3"
NGC_STUB_PYTHON = "3.10"
"""Python of the python backend's default stub in NGC 24.10 (Ubuntu 22.04's system Python)."""
NATIVE_BACKENDS = frozenset({"python", "onnxruntime", "pytorch", "openvino", "tensorrt", "tensorflow", "fil", "dali"})
"""Backends shipped in NVIDIA's image: a config naming any other backend fails to load there."""


class UnknownTargetError(TritongenError, KeyError):
    """A target name that is not in TARGETS."""


@dataclass(frozen=True)
class Target:
    """One deployment target."""

    name: str
    description: str
    output: PurePosixPath
    """Default output folder, relative to the project root."""
    image: str
    """Image the generated deploy files run (`TRITON_IMAGE` overrides it at run time)."""
    server_stub_python: str
    """Python of the server's default python-backend stub."""


LOCAL = Target(
    name="local",
    description=(
        "the tritonserver 2.51 embedded in nvidia-pytriton (`tritongen serve`, tests, benchmarks), with "
        "this project's Python-based stand-ins under NVIDIA's backend names; written to repository/"
    ),
    output=PurePosixPath("repository"),
    image="tritongen-triton:latest",
    server_stub_python="3.11",
)
NGC = Target(
    name="ngc",
    description=f"{NGC_IMAGE} with NVIDIA's native backends; written to build/ngc/repository/",
    output=PurePosixPath("build/ngc/repository"),
    image=NGC_IMAGE,
    server_stub_python=NGC_STUB_PYTHON,
)
TARGETS: dict[str, Target] = {target.name: target for target in (LOCAL, NGC)}
"""Every target by name."""
PRODUCTION = NGC
"""The target the model files are made for (environments are checked against its stub)."""


def get_target(name: str) -> Target:
    """The target called `name`, or an error listing the known ones."""
    try:
        return TARGETS[name]
    except KeyError:
        raise UnknownTargetError(f"unknown target {name!r}: use one of {', '.join(TARGETS)}") from None
