"""`prototype_classifier`: a classifier head made at build time, one prototype per label.

Each label's prototype is the mean embedding of its example texts, computed with the version's
own preprocessing (so the file depends on it); logits are `scale` x cosine similarity to each
prototype, and the formats that can add `label` = labels[argmax(logits)].
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from generator.base.sources import Source
from generator.kinds.builders.base import BuildSettings
from generator.kinds.builders.encoder import (
    SentenceTransformerBuilder,
    sentence_embedding_module,
)
from generator.kinds.preprocessing import get_preprocessor
from generator.kinds.preprocessing.base import PreprocessingSettings


class PrototypeClassifierBuild(BuildSettings):
    """A classifier head made deterministically at build time: one prototype per label.

    Each label's prototype is the mean embedding of its example texts, computed with this
    version's own preprocessing; logits are `scale` x cosine similarity to each prototype.
    """

    builder: Literal["prototype_classifier"]
    """Selects this builder."""
    source: Source
    """The sentence-transformers model folder whose embeddings the prototypes are made of."""
    labels: dict[str, tuple[str, ...]]
    """Label -> example texts; label order is the order of LOGITS."""
    scale: float = Field(default=20.0, gt=0)
    """Factor applied to the cosine similarities to make the logits (default 20: a softmax over
    them is confident); it changes no label, only how peaked the logits are."""

    @field_validator("labels")
    @classmethod
    def _two_labels(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        if len(value) < 2:
            raise ValueError("a classifier needs at least 2 labels")
        for label, examples in value.items():
            if not re.fullmatch(r"[A-Za-z0-9_\-]+", label):
                raise ValueError(f"label {label!r} must be letters, digits, '_' or '-'")
            if not examples:
                raise ValueError(f"label {label!r} needs at least one example text")
        return value


class PrototypeClassifier(SentenceTransformerBuilder):
    name = "prototype_classifier"
    settings = PrototypeClassifierBuild
    model_kinds = ("classifier",)
    uses_preprocessing = True
    output_name = "logits"

    def labels(self, settings: Any) -> list[str] | None:
        return list(settings.labels)

    def example_texts(self, settings: Any) -> tuple[str, ...]:
        return tuple(text for examples in settings.labels.values() for text in examples)

    def padded_module(self, settings: Any, preprocessing: PreprocessingSettings) -> Any:
        import torch

        class PrototypeClassifierModule(torch.nn.Module):
            """Normalized embedding -> `scale` x cosine similarity to each label's prototype."""

            def __init__(self, embedding: torch.nn.Module, prototypes: torch.Tensor, scale: float):
                super().__init__()
                self.embedding = embedding
                self.register_buffer("prototypes", prototypes)
                self.scale = scale

            def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
                return self.scale * self.embedding(input_ids, attention_mask) @ self.prototypes.T

        # Prototypes and inputs are compared by cosine: the classifier always normalizes.
        embedding = sentence_embedding_module(settings.source, preprocessing.max_length, normalize=True)
        tokenize = get_preprocessor(preprocessing.kind).tokenize_padded
        prototypes = []
        for examples in settings.labels.values():
            ids, mask = tokenize(list(examples), preprocessing)
            with torch.inference_mode():
                vectors = embedding(torch.from_numpy(ids), torch.from_numpy(mask))
            prototypes.append(torch.nn.functional.normalize(vectors.mean(0), dim=0))
        return PrototypeClassifierModule(embedding, torch.stack(prototypes), settings.scale).eval()
