"""Preprocessing kinds: what turns a request's inputs into the inference model's tensors.

A `PreprocessingKind` owns the Triton backend and model code of the preprocessing model, its
parameter contract (rendered from the spec, parsed by the package that runs it), its client
input and its output tensors, and the files it needs in the version folder. Adding a kind is
one module with one subclass and an entry in `PREPROCESSORS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from generator.pipeline.plan import TensorPlan
    from generator.pipeline.spec import Preprocessing


class PreprocessingKind(ABC):
    """One preprocessing kind (subclasses are stateless singletons)."""

    name: ClassVar[str]
    """The spec's `preprocessing.kind` value."""
    backend: ClassVar[str]
    """Triton backend of the preprocessing model (one of NVIDIA's image)."""
    package: ClassVar[str]
    """Distribution name of the versioned package the model runs, pinned in its environment."""

    @abstractmethod
    def inputs(self) -> tuple[TensorPlan, ...]:
        """The client-facing inputs (the ensemble's inputs)."""

    @abstractmethod
    def outputs(self, settings: Preprocessing) -> tuple[TensorPlan, ...]:
        """Tensors handed to the inference model, in the order of its inputs."""

    @abstractmethod
    def parameters(self, settings: Preprocessing) -> dict[str, str]:
        """The model config's parameters for one version's preprocessing settings."""

    @abstractmethod
    def model_code(self) -> str:
        """Text of the version folder's `model.py` (python backend)."""

    @abstractmethod
    def version_files(self, settings: Preprocessing) -> Mapping[str, object]:
        """Artifacts of the version folder: file name -> spec source (resolved by the pipeline)."""


def _registry() -> dict[str, PreprocessingKind]:
    from generator.kinds.preprocessing.textprep import TextPrep

    return {kind.name: kind for kind in (TextPrep(),)}


PREPROCESSORS: dict[str, PreprocessingKind] = _registry()
"""Every preprocessing kind by its spec name."""
