"""`transformers_classifier`: a team's own fine-tuned Transformers sequence classifier.

The source is a checkpoint folder as `save_pretrained` writes it (`config.json` with `id2label`,
the weights). The exported graph returns the checkpoint's `logits`; the formats that can add the
string output look up `label` = id2label[argmax(logits)]. Labels come from `config.json`: the
spec's `outputs.labels` must list them in id order. Single-label checkpoints only: a
`multi_label_classification` checkpoint is rejected (its labels are not an argmax).
"""

from __future__ import annotations

import json
import os
from typing import Any, Literal

from generator.base.spec_sources import ArtifactError, Source, resolve_source
from generator.kinds.builders.base import Builder, BuildSettings
from generator.kinds.preprocessing.base import PreprocessingSettings


class TransformersClassifierBuild(BuildSettings):
    """Export a fine-tuned `AutoModelForSequenceClassification` checkpoint as it is."""

    builder: Literal["transformers_classifier"]
    """Selects this builder."""
    source: Source
    """The checkpoint folder (`config.json` with `id2label`, `model.safetensors` or
    `pytorch_model.bin`), as `save_pretrained` wrote it."""


def checkpoint_labels(source: Source) -> list[str]:
    """The checkpoint's labels in id order (`config.json` `id2label`); ValueError naming the problem."""
    try:
        config_file = resolve_source(source) / "config.json"
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (ArtifactError, OSError, json.JSONDecodeError) as error:
        raise ValueError(f"model.build.source: not a Transformers checkpoint folder: {error}") from None
    if config.get("problem_type") == "multi_label_classification":
        raise ValueError(f"{config_file}: multi-label checkpoints are not supported yet (labels are not an argmax)")
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or len(id2label) < 2:
        raise ValueError(f"{config_file}: needs an `id2label` of at least 2 labels")
    try:
        return [str(id2label[key]) for key in sorted(id2label, key=int)]
    except ValueError:
        raise ValueError(f"{config_file}: `id2label` keys must be integers, got {sorted(id2label)}") from None


class TransformersClassifier(Builder):
    name = "transformers_classifier"
    settings = TransformersClassifierBuild
    model_kinds = ("classifier",)
    output_name = "logits"

    def labels(self, settings: Any) -> list[str] | None:
        return checkpoint_labels(settings.source)

    def padded_module(self, settings: Any, preprocessing: PreprocessingSettings) -> Any:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModelForSequenceClassification
        from transformers.utils import logging as transformers_logging

        class SequenceLogits(torch.nn.Module):
            """The checkpoint's forward pass, returning only its logits [batch, labels]."""

            def __init__(self, model: torch.nn.Module) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
                return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

        transformers_logging.set_verbosity_error()
        folder = resolve_source(settings.source)
        model = AutoModelForSequenceClassification.from_pretrained(str(folder), attn_implementation="eager")
        positions = getattr(model.config, "max_position_embeddings", None)
        if isinstance(positions, int) and positions < preprocessing.max_length:
            raise ArtifactError(
                f"{folder}: preprocessing.max_length {preprocessing.max_length} exceeds the model's "
                f"{positions} position embeddings"
            )
        return SequenceLogits(model.eval()).eval()
