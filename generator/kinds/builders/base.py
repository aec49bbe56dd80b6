"""What every builder is: how a model version's inference file is made from its spec's `build`."""

from __future__ import annotations

from abc import ABC
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from generator.base.sources import ArtifactError, Source, StrictModel
from generator.kinds.builders.families import TokenLimit

if TYPE_CHECKING:
    from generator.kinds.preprocessing.base import PreprocessingSettings


DEFAULT_THRESHOLD = 0.5
"""A multi-label classifier's threshold when its spec names none (`outputs.threshold`)."""


@dataclass(frozen=True)
class ClassifierHead:
    """The classifier tail of an exported graph, after the builder's `logits`: `probabilities`
    (softmax, or sigmoid for a multi-label classifier) and the label strings (`label`: the
    argmax label; multi-label `labels`: each label whose probability is over `threshold`, else "")."""

    labels: tuple[str, ...]
    """The labels in logits order."""
    multi_label: bool = False
    threshold: float = DEFAULT_THRESHOLD


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
    """The float output of the exported graph (`embedding`, `logits`, `score`)."""
    pairs: ClassVar[bool] = False
    """It scores (query, text) pairs: its module also takes `token_type_ids` (the pair's segments)."""
    ragged: ClassVar[bool] = False
    """The ragged formats build it too (`padded_module` turned unpadded), unless `unpadded_problem` says why not."""

    def source(self, settings: BuildSettings) -> Source:
        """The file or folder the build starts from."""
        return settings.source

    def labels(self, settings: Any) -> list[str] | None:
        """Classifier labels in logits order (the formats add the classifier tail), or None;
        ValueError naming the field when they cannot be read."""
        return None

    def multi_label(self, settings: Any) -> bool:
        """Whether the build is a multi-label classifier (independent sigmoid per label)."""
        return False

    def kind_problem(self, settings: Any, model_kind: str) -> str | None:
        """Why this build cannot serve a spec of `model_kind` (`ModelSpec.kind`), starting with the
        field (`model.build...: `), or None."""
        if model_kind not in self.model_kinds:
            return f"model.build: {self.name} is for {' or '.join(f'{kind}s' for kind in self.model_kinds)}"
        return None

    def head(self, settings: Any, threshold: float | None = None) -> ClassifierHead | None:
        """The classifier tail the formats add (None: not a classifier); `threshold`: a
        multi-label spec's `outputs.threshold` (None: `DEFAULT_THRESHOLD`)."""
        labels = self.labels(settings)
        if labels is None:
            return None
        threshold = DEFAULT_THRESHOLD if threshold is None else threshold
        return ClassifierHead(tuple(labels), self.multi_label(settings), threshold)

    def example_texts(self, settings: Any) -> tuple[str, ...]:
        """Texts the build itself declares (quantization's fidelity gate runs them first)."""
        return ()

    def token_limit(self, settings: Any, tokenizer: Source | None) -> TokenLimit | None:
        """The tokens per text its model takes: bound and default of `preprocessing.max_length`
        (`tokenizer`: the version's tokenizer file, if well-formed); None: unknown (the spec sets
        it). SourceModelError or ArtifactError when the source cannot be read,
        UnsupportedModelError for a model of a family `families.FAMILIES` does not list."""
        return None

    def vocabulary_problem(self, settings: Any, tokenizer: Source | None) -> str | None:
        """Why the version's tokenizer file (`tokenizer`, if well-formed) cannot feed the build's
        model: it gives token ids at or above the model's `vocab_size`; None when they fit or
        either cannot be read (the source checks and the build report that)."""
        return None

    def unpadded_problem(self, settings: Any) -> str | None:
        """Why the ragged formats cannot export this build unpadded, or None."""
        return None

    def padded_module(self, settings: Any, preprocessing: PreprocessingSettings) -> Any:
        """The padded torch module (inputs `input_ids`, `attention_mask`, and `token_type_ids` for
        `pairs`) the formats export."""
        raise ArtifactError(f"the {self.name} builder makes no torch module")
