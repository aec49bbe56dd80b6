"""`transformers_classifier`: a team's own fine-tuned Transformers sequence classifier.

The source is a checkpoint folder as `save_pretrained` writes it (`config.json` with `id2label`,
the weights). The exported graph returns the checkpoint's `logits`, and the formats add the
classifier tail (`ClassifierHead`): probabilities and labels. A checkpoint whose `config.json`
says `problem_type: multi_label_classification` is a multi-label classifier (a sigmoid per
label, spec kind `multi_label_classifier`); any other is single-label (softmax and argmax,
kind `classifier`). Labels are `id2label`'s in id order, or `build.labels` (one name per label
of the checkpoint); the spec's `outputs.labels` must list the same.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import field_validator

from generator.base.sources import ArtifactError, Source, resolve_source
from generator.kinds.builders.base import Builder, BuildSettings
from generator.kinds.builders.families import (
    TokenLimit,
    checkpoint_token_limit,
    checkpoint_unpadded_problem,
    model_to_build,
    vocabulary_problem,
)
from generator.kinds.preprocessing.base import PreprocessingSettings


class TransformersClassifierBuild(BuildSettings):
    """Export a fine-tuned `AutoModelForSequenceClassification` checkpoint as it is: single-label
    (`kind: classifier`), or multi-label when its `config.json` says `problem_type:
    multi_label_classification` (`kind: multi_label_classifier`)."""

    builder: Literal["transformers_classifier"]
    """Selects this builder."""
    source: Source
    """The checkpoint folder (`config.json` with `id2label`, `model.safetensors` or
    `pytorch_model.bin`), as `save_pretrained` wrote it."""
    labels: tuple[str, ...] | None = None
    """The labels' names in id order, one per label of the checkpoint, instead of its
    `config.json` `id2label` (e.g. when that has Transformers' default names `LABEL_0`, ...);
    omitted: `id2label`'s."""

    @field_validator("labels")
    @classmethod
    def _distinct_names(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        problem = None if value is None else _names_problem(list(value))
        if problem is not None:
            raise ValueError(problem)
        return value


MULTI_LABEL = "multi_label_classification"
"""`config.json` `problem_type` of a multi-label checkpoint (Transformers' own value)."""


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint's `config.json` says about its classifier head."""

    config_file: Path
    problem_type: str | None
    id2label: list[str] | None
    """Its labels in id order, None without an `id2label`."""
    num_labels: int
    """Labels (logits) of the head: `id2label`'s size, else `num_labels` (Transformers' default: 2)."""
    counted_by: str
    """Where `num_labels` comes from, for messages: `id2label`, `num_labels` or the default."""

    @property
    def multi_label(self) -> bool:
        return self.problem_type == MULTI_LABEL


def _names_problem(labels: list[str]) -> str | None:
    """What is wrong with label names (each must be a distinct non-empty name: a multi-label row
    holds "" for a label that is off), or None."""
    if any(not label.strip() for label in labels):
        return f"labels must be non-empty names, got {labels}"
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    return f"labels must be distinct, {repeated} appear more than once" if repeated else None


def read_checkpoint(source: Source) -> Checkpoint:
    """The `config.json` of a checkpoint folder; ValueError naming the field and the problem."""
    try:
        config_file = resolve_source(source) / "config.json"
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (ArtifactError, OSError, json.JSONDecodeError) as error:
        raise ValueError(f"model.build.source: not a Transformers checkpoint folder: {error}") from None
    where = f"model.build.source: {config_file}"
    if not isinstance(config, dict):
        raise ValueError(f"{where}: not a Transformers config (a JSON object)")
    problem_type = config.get("problem_type")
    id2label = config.get("id2label")
    names = None
    if id2label is not None:
        if not isinstance(id2label, dict):
            raise ValueError(f"{where}: `id2label` must map label ids to names")
        try:
            ids = sorted(int(key) for key in id2label)
        except ValueError:
            raise ValueError(f"{where}: `id2label` keys must be integers, got {sorted(id2label)}") from None
        if ids != list(range(len(ids))):
            raise ValueError(f"{where}: `id2label` ids must be 0 to {len(ids) - 1}, got {ids}")
        names = [str(id2label[key]) for key in sorted(id2label, key=int)]
    num_labels = len(names) if names is not None else config.get("num_labels", 2)
    if not isinstance(num_labels, int) or isinstance(num_labels, bool) or num_labels < 1:
        raise ValueError(f"{where}: `num_labels` must be a positive integer, got {num_labels!r}")
    counted_by = "`id2label`" if names is not None else "`num_labels`"
    if names is None and "num_labels" not in config:
        counted_by = "no `num_labels`, Transformers' default"
    problem = problem_type if isinstance(problem_type, str) else None
    return Checkpoint(config_file, problem, names, num_labels, counted_by)


def checkpoint_labels(settings: TransformersClassifierBuild) -> list[str]:
    """The labels in id order: `build.labels` (one per label of the checkpoint), else the
    checkpoint's `id2label`; ValueError naming the field, the counts and the config file."""
    checkpoint = read_checkpoint(settings.source)
    least = 1 if checkpoint.multi_label else 2
    if settings.labels is not None:
        if len(settings.labels) != checkpoint.num_labels:
            raise ValueError(
                f"model.build.labels: {len(settings.labels)} labels, but the checkpoint has "
                f"{checkpoint.num_labels} ({checkpoint.config_file}: {checkpoint.counted_by})"
            )
        labels = list(settings.labels)
    elif checkpoint.id2label is None:
        raise ValueError(
            f"model.build.source: {checkpoint.config_file} has no `id2label`: name its "
            f"{checkpoint.num_labels} labels ({checkpoint.counted_by}) in id order with model.build.labels"
        )
    else:
        labels = checkpoint.id2label
        problem = _names_problem(labels)
        if problem is not None:
            raise ValueError(f"model.build.source: {checkpoint.config_file} `id2label`: {problem}")
    if len(labels) < least:
        kind = "a multi-label" if checkpoint.multi_label else "a single-label"
        raise ValueError(f"model.build: {kind} classifier needs at least {least} labels, got {labels}")
    return labels


class TransformersClassifier(Builder):
    name = "transformers_classifier"
    settings = TransformersClassifierBuild
    model_kinds = ("classifier", "multi_label_classifier")
    output_name = "logits"
    ragged = True

    def labels(self, settings: Any) -> list[str] | None:
        return checkpoint_labels(settings)

    def multi_label(self, settings: Any) -> bool:
        return read_checkpoint(settings.source).multi_label

    def kind_problem(self, settings: Any, model_kind: str) -> str | None:
        problem = super().kind_problem(settings, model_kind)
        if problem is not None:
            return problem
        checkpoint = read_checkpoint(settings.source)
        wanted = "multi_label_classifier" if checkpoint.multi_label else "classifier"
        if model_kind == wanted:
            return None
        problem_type = f"problem_type: {checkpoint.problem_type}" if checkpoint.problem_type else "no problem_type"
        head = "multi-label (a sigmoid per label)" if checkpoint.multi_label else "single-label (softmax)"
        return (
            f"model.build.source: {checkpoint.config_file} has {problem_type}, a {head} classifier: "
            f"use `kind: {wanted}` (not {model_kind})"
        )

    def unpadded_problem(self, settings: Any) -> str | None:
        return checkpoint_unpadded_problem(settings.source)

    def token_limit(self, settings: Any, tokenizer: Source | None) -> TokenLimit:
        """The tokens the checkpoint's model takes; by default at most its tokenizer's
        `model_max_length` (`tokenizer_config.json` beside the tokenizer file or in the checkpoint)."""
        tokenizer_folders: tuple[Path, ...] = ()
        if tokenizer is not None:
            with contextlib.suppress(ArtifactError):  # a missing tokenizer file is reported as such
                tokenizer_folders = (resolve_source(tokenizer).parent,)
        return checkpoint_token_limit(resolve_source(settings.source), tokenizer_folders)

    def vocabulary_problem(self, settings: Any, tokenizer: Source | None) -> str | None:
        try:
            folder = resolve_source(settings.source)
        except ArtifactError:
            return None  # a missing checkpoint is reported as such
        return vocabulary_problem(folder, tokenizer)

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
        transformers_logging.disable_progress_bar()
        folder = resolve_source(settings.source)
        known = model_to_build(folder)  # a family the exports do not cover is refused by name
        if preprocessing.max_length > known.tokens:
            raise ArtifactError(f"preprocessing.max_length {preprocessing.max_length} is over {known.tokens_reason()}")
        model = AutoModelForSequenceClassification.from_pretrained(str(folder), attn_implementation="eager")
        return SequenceLogits(model.eval()).eval()
