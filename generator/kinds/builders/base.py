"""What every builder is: how a model version's inference file is made from its spec's `build`."""

from __future__ import annotations

from abc import ABC
from typing import TYPE_CHECKING, Any, ClassVar

from generator.base.spec_sources import ArtifactError, Source, StrictModel

if TYPE_CHECKING:
    from generator.kinds.preprocessing.base import PreprocessingSettings


class BuildSettings(StrictModel):
    """A version's `model.build` section: the fields every builder's settings have."""

    builder: str
    """Selects the builder (`generator/kinds/builders/`)."""
    source: Source
    """The file or folder the build starts from."""


class Builder(ABC):
    """One builder (subclasses are stateless singletons); its spec section is `settings`."""

    name: ClassVar[str]
    """The spec's `model.build.builder` value."""
    settings: ClassVar[type[BuildSettings]]
    """The pydantic model of its `build` section (its `builder` field is `Literal[name]`)."""
    model_kinds: ClassVar[tuple[str, ...]] = ("embedding", "classifier")
    """The spec kinds (`ModelSpec.kind`) it can build."""
    prebuilt: ClassVar[bool] = False
    """The file is copied as is (no export); its format must match the spec's."""
    sentence_transformer: ClassVar[bool] = False
    """Its source is a sentence-transformers model folder (the spec reads its `max_seq_length`)."""
    uses_preprocessing: ClassVar[bool] = False
    """The built file depends on the version's preprocessing (e.g. prototypes embedded with it)."""
    output_name: ClassVar[str] = "embedding"
    """The float output of the exported graph (`embedding`, `logits`)."""

    def source(self, settings: BuildSettings) -> Source:
        """The file or folder the build starts from."""
        return settings.source

    def labels(self, settings: Any) -> list[str] | None:
        """Classifier labels in logits order (a string `label` output is added), or None."""
        return None

    def example_texts(self, settings: Any) -> tuple[str, ...]:
        """Texts the build itself declares (quantization's fidelity gate runs them first)."""
        return ()

    def padded_module(self, settings: Any, preprocessing: PreprocessingSettings) -> Any:
        """The padded torch module (inputs `input_ids`, `attention_mask`) the formats export."""
        raise ArtifactError(f"the {self.name} builder makes no torch module")
