"""Targets own their facts: images, stub Python, output folder; `get_target` names the known ones."""

from __future__ import annotations

import pytest

from generator.kinds.targets import (
    LOCAL,
    NGC,
    NGC_IMAGE,
    PRODUCTION,
    TARGETS,
    UnknownTargetError,
    get_target,
    image_note,
)


def test_registry() -> None:
    assert list(TARGETS) == ["local", "ngc"] and PRODUCTION is NGC
    assert get_target("ngc") is NGC
    with pytest.raises(UnknownTargetError, match="use one of local, ngc"):
        get_target("cloud")
    assert len({target.output for target in TARGETS.values()}) == len(TARGETS)


def test_images() -> None:
    assert (LOCAL.image, LOCAL.server_image) == ("tritongen-triton:latest", "tritongen-triton:24.10-py3")
    assert NGC.image == NGC.server_image == NGC_IMAGE == "nvcr.io/nvidia/tritonserver:24.10-py3"
    assert (LOCAL.server_stub_python, NGC.server_stub_python) == ("3.11", "3.10")


def test_image_note_names_how_to_get_the_targets_image_or_nvidias() -> None:
    build = "build it with `python -m generator.containers.image build`"
    login = "NVIDIA's registry; needs `docker login nvcr.io`"
    assert image_note(LOCAL, LOCAL.image) == f"{LOCAL.image} ({build})"
    assert image_note(LOCAL, NGC_IMAGE) == image_note(NGC, NGC_IMAGE) == f"{NGC_IMAGE} ({login})"
    assert image_note(NGC, LOCAL.image) == LOCAL.image  # another target's image: no hint
    assert image_note(LOCAL, "my/triton:1") == "my/triton:1"
