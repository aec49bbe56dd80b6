"""`local`: the tritonserver 2.51 embedded in nvidia-pytriton, with this project's Python-based
stand-ins under NVIDIA's backend names (`tritongen serve`, tests, benchmarks).

Its containers run the stand-in image (`generator.containers.image`), which mirrors NVIDIA's
where it matters to a repository.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from generator.base.footprint import Footprint
from generator.kinds.targets.base import TRITON_RELEASE, Target

IMAGE_REPOSITORY = "tritongen-triton"
"""Repository of the local stand-in image (its content tags, `latest`, and the stable tag)."""

LOCAL = Target(
    name="local",
    description=(
        "the tritonserver 2.51 embedded in nvidia-pytriton (`tritongen serve`, tests, benchmarks), with "
        "this project's Python-based stand-ins under NVIDIA's backend names; written to repository/"
    ),
    output=PurePosixPath("repository"),
    image=f"{IMAGE_REPOSITORY}:latest",
    image_hint="build it with `python -m generator.containers.image build`",
    # The stand-in under NVIDIA's release tag: stable across machines (the content tag of the
    # image build depends on the machine's Python builds); the bake CLI gives it this name.
    server_image=f"{IMAGE_REPOSITORY}:{TRITON_RELEASE}-py3",
    server_stub_python="3.11",
    stub_name="local",
    stub_source="nvidia-pytriton 0.7.0's embedded server, project Python",
    server_memory=Footprint(
        50.0,
        "PSS of tritonserver (HTTP/gRPC frontends, ensembles, the python backend; the stand-ins' "
        "instances are processes of their own) in the Kubernetes pod with the shipped specs (baked local "
        "image, 2 cores; tests/integration/test_k8s_pod.py, 2026-12-01)",
    ),
    native_inference=False,
)
