"""Targets: the servers a generated repository is deployed to.

Both targets get the SAME model files (backend names of NVIDIA's image, environments that
ship their own stub): what the tests serve is what users deploy. They differ in the server
that runs them and the images the deploy files start. A target owns every fact about its
server in one module (`local.py`, `ngc.py`; the `Target` record in `base.py`): adding one is a
module with one `Target` and an entry in `TARGETS`.
"""

from __future__ import annotations

from generator.kinds.targets.base import (
    CONTAINER_TRITON_ROOT,
    NATIVE_BACKENDS,
    TRITON_RELEASE,
    TRITON_VERSION,
    Target,
    UnknownTargetError,
)
from generator.kinds.targets.local import LOCAL
from generator.kinds.targets.ngc import NGC, NGC_IMAGE

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


def image_note(target: Target, image: str) -> str:
    """`image` as the deploy files name it: with how to get it when it is `target`'s own image or
    NVIDIA's (PRODUCTION's, whatever the target)."""
    for owner in (target, PRODUCTION):
        if image == owner.image:
            return f"{image} ({owner.image_hint})"
    return image


__all__ = [
    "CONTAINER_TRITON_ROOT",
    "LOCAL",
    "NATIVE_BACKENDS",
    "NGC",
    "NGC_IMAGE",
    "PRODUCTION",
    "TARGETS",
    "TRITON_RELEASE",
    "TRITON_VERSION",
    "Target",
    "UnknownTargetError",
    "get_target",
    "image_note",
]
