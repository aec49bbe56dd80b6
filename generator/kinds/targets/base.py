"""What every target is: the `Target` record and the facts of the Triton release they share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from generator.base.footprint import Footprint
from generator.errors import TritongenError

TRITON_RELEASE = "24.10"
"""NVIDIA's container release the repository is made for."""
TRITON_VERSION = "2.51.0"
"""The tritonserver version of that release (also the one bundled by nvidia-pytriton 0.7.0)."""
NATIVE_BACKENDS = frozenset({"python", "onnxruntime", "pytorch", "openvino", "tensorrt", "tensorflow", "fil", "dali"})
"""Backends shipped in NVIDIA's image: a config naming any other backend fails to load there."""
CONTAINER_TRITON_ROOT = PurePosixPath("/opt/tritonserver")
"""Where NVIDIA's image (and the local stand-in) keeps `bin/tritonserver` and `backends/`."""


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
    """Image `docker-run.sh` and `docker-compose.yml` run (`TRITON_IMAGE` overrides it at run time)."""
    image_hint: str
    """How an operator gets `image` (named next to it in the deploy files)."""
    server_image: str
    """The server image of the Kubernetes manifests (the baked image is built FROM it): a name
    that is the same on every machine."""
    server_stub_python: str
    """Python of the server's default python-backend stub."""
    stub_name: str
    """The server's stub as `tritongen env --target` names it."""
    stub_source: str
    """Where the server's stub comes from (environment checks name it)."""
    server_memory: Footprint
    """tritonserver itself, with the backends the shipped repository loads (not its instances)."""
    native_inference: bool
    """Inference instances run inside tritonserver (NVIDIA's native backends: no process, no
    /dev/shm region each); False: one stand-in stub process per instance."""
    triton_root: PurePosixPath = CONTAINER_TRITON_ROOT
    """Where the server's image keeps `bin/tritonserver` and `backends/`."""
