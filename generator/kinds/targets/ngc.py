"""`ngc`: NVIDIA's tritonserver image with its native backends, the production target."""

from __future__ import annotations

from pathlib import PurePosixPath

from generator.base.footprint import Footprint
from generator.kinds.targets.base import TRITON_RELEASE, Target

NGC_IMAGE = f"nvcr.io/nvidia/tritonserver:{TRITON_RELEASE}-py3"
"""NVIDIA's image of the release (r24.10, Triton 2.51); needs registry access."""
NGC_STUB_PYTHON = "3.10"
"""Python of the python backend's default stub in NGC 24.10 (Ubuntu 22.04's system Python).

24.10 = Triton 2.51.0, whose build.py (tag v2.51.0) builds on Ubuntu 22.04 (`ubuntu:22.04`,
CUDA `ubuntu2204` repositories) and links the stub against `libpython3-dev`, i.e. Python
3.10, as for every release since 23.05; releases on Ubuntu 24.04 moved to 3.12."""

NGC = Target(
    name="ngc",
    description=f"{NGC_IMAGE} with NVIDIA's native backends; written to build/ngc/repository/",
    output=PurePosixPath("build/ngc/repository"),
    image=NGC_IMAGE,
    image_hint="NVIDIA's registry; needs `docker login nvcr.io`",
    server_image=NGC_IMAGE,
    server_stub_python=NGC_STUB_PYTHON,
    stub_name=f"ngc-{TRITON_RELEASE}",
    stub_source=f"{NGC_IMAGE}: Ubuntu 22.04, Python {NGC_STUB_PYTHON}",
    server_memory=Footprint(
        202.0,
        "373 MiB PSS with one prototype classifier on NVIDIA's r24.10 onnxruntime and python backends "
        "(tritonserver 2.51, one instance each), less its onnx session (128) and its preprocessing stub (43): "
        "tritonserver with the backends' libraries; one int8 classifier measured 185 MiB in all, so the "
        "int8 figures overestimate a one-model repository by about 100 MiB",
    ),
    native_inference=True,
)
