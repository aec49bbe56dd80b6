"""`cross_encoder`: a reranker scoring (query, text) pairs, as sentence-transformers' `CrossEncoder`.

The source is a checkpoint folder of a Transformers sequence classifier with one label, as
`CrossEncoder.save_pretrained` (or `save_pretrained` of `AutoModelForSequenceClassification`)
writes it. The exported graph takes the pair's `input_ids`, `attention_mask` and
`token_type_ids` and returns `score` [batch, 1]: the logit through the activation
`CrossEncoder.predict` applies (sentence-transformers 6): the `torch.nn` class named by
`config_sentence_transformers.json`'s `activation_fn` (sentence-transformers 6 saves it there),
else `config.json`'s `sentence_transformers.activation_fn` or the older
`sbert_ce_default_activation_function`, else `Sigmoid`, in the order `CrossEncoder` reads them.
A `modules.json` (sentence-transformers 6 saves one) must hold just the Transformer module.
Token types reach the model as `CrossEncoder` passes them: when the family takes them and the
checkpoint's `AutoTokenizer` returns them (`model_input_names`: BERT's and ELECTRA's tokenizers
do); otherwise the model gets its default, zeros, and the graph's `token_type_ids` is unused.
The ragged formats (`onnx_ragged`, `torchscript_ragged`; `padding: none`) build it too: the same
weights, activation and token types on unpadded pairs (`unpadded_encoder.RaggedCrossEncoder`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from generator.base.source_model import SourceModelError
from generator.base.sources import ArtifactError, Source, resolve_source
from generator.kinds.builders.base import Builder, BuildSettings
from generator.kinds.builders.families import (
    TokenLimit,
    checkpoint_token_limit,
    checkpoint_unpadded_problem,
    json_object,
    model_to_build,
)
from generator.kinds.preprocessing.base import PreprocessingSettings

DEFAULT_ACTIVATION = "torch.nn.Sigmoid"
"""`CrossEncoder`'s activation for one label when the folder names none."""
ACTIVATION_PATTERN = r"torch\.nn\.(modules\.activation\.|modules\.linear\.)?[A-Z][A-Za-z0-9]*"
"""The activations a graph can hold: `torch.nn` classes, as `CrossEncoder` saves their path."""


class CrossEncoderBuild(BuildSettings):
    """Export a cross-encoder (a sequence classifier with one label) scoring (query, text) pairs
    (`kind: reranker`)."""

    builder: Literal["cross_encoder"]
    """Selects this builder."""
    source: Source
    """The checkpoint folder (`config.json` with `num_labels` 1, the weights), as
    `CrossEncoder.save_pretrained` or Transformers' `save_pretrained` wrote it."""


def json_list(path: Path) -> list[Any]:
    """A JSON file holding a list; SourceModelError when it cannot be read as one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SourceModelError(f"{path}: cannot be read as JSON: {error}") from None
    if not isinstance(data, list):
        raise SourceModelError(f"{path}: expected a JSON list")
    return data


def read_cross_encoder(source: Source) -> tuple[Path, str]:
    """(`config.json`, the activation's dotted `torch.nn` path) of a cross-encoder folder;
    ValueError naming the field and the problem."""
    try:
        config_file = resolve_source(source) / "config.json"
        config = json_object(config_file)
    except (ArtifactError, OSError, ValueError) as error:
        raise ValueError(f"model.build.source: not a Transformers checkpoint folder: {error}") from None
    where = f"model.build.source: {config_file}"
    id2label = config.get("id2label")
    labels = len(id2label) if isinstance(id2label, dict) else config.get("num_labels", 2)
    if labels != 1:
        raise ValueError(
            f"{where}: a cross-encoder scores with one label, this checkpoint has {labels} "
            "(`id2label`/`num_labels`): serve it with builder transformers_classifier and kind classifier"
        )
    folder = config_file.parent
    modules_file = folder / "modules.json"
    if modules_file.is_file():
        modules = json_list(modules_file)
        kinds = [str(module.get("type", "")) if isinstance(module, dict) else "?" for module in modules]
        if len(kinds) != 1 or not kinds[0].endswith(".Transformer"):
            raise ValueError(
                f"model.build.source: {modules_file}: a cross-encoder of one Transformer module is exported, "
                f"this folder has {kinds}"
            )
    saved = folder / "config_sentence_transformers.json"
    section = config.get("sentence_transformers")
    named = json_object(saved).get("activation_fn") if saved.is_file() else None
    named = named or (section.get("activation_fn") if isinstance(section, dict) else None)
    named = named or config.get("sbert_ce_default_activation_function") or DEFAULT_ACTIVATION
    if not isinstance(named, str) or not re.fullmatch(ACTIVATION_PATTERN, named):
        raise ValueError(
            f"{where}: activation {named!r}: only torch.nn activations (e.g. torch.nn.Sigmoid) can go in "
            "the graph (CrossEncoder too loads others only with trust_remote_code)"
        )
    return config_file, named


def activation_module(named: str) -> Any:
    """The `torch.nn` activation a dotted path names; ArtifactError when torch has none."""
    import torch

    activation = getattr(torch.nn, named.rsplit(".", 1)[1], None)
    if not (isinstance(activation, type) and issubclass(activation, torch.nn.Module)):
        raise ArtifactError(f"model.build.source: activation {named!r} is not a torch.nn module")
    return activation()


def _tokenizer_gives_token_types(preprocessing: PreprocessingSettings, checkpoint: Path) -> bool:
    """Whether the `AutoTokenizer` of the version's tokenizer folder (else of the checkpoint)
    returns `token_type_ids`, as `CrossEncoder` then passes them to the model."""
    from transformers import AutoTokenizer

    folders = [checkpoint]
    with contextlib.suppress(ArtifactError):
        folders.insert(0, resolve_source(preprocessing.tokenizer).parent)
    for folder in folders:
        with contextlib.suppress(OSError, ValueError):
            return "token_type_ids" in AutoTokenizer.from_pretrained(str(folder)).model_input_names
    raise ArtifactError(f"model.build.source: no Transformers tokenizer in {' or '.join(map(str, folders))}")


class CrossEncoder(Builder):
    name = "cross_encoder"
    settings = CrossEncoderBuild
    model_kinds = ("reranker",)
    output_name = "score"
    pairs = True
    ragged = True

    def kind_problem(self, settings: Any, model_kind: str) -> str | None:
        problem = super().kind_problem(settings, model_kind)
        if problem is not None:
            return problem
        read_cross_encoder(settings.source)  # ValueError naming the problem
        return None

    def unpadded_problem(self, settings: Any) -> str | None:
        return checkpoint_unpadded_problem(settings.source)

    def token_limit(self, settings: Any, tokenizer: Source | None) -> TokenLimit:
        """The tokens of a pair the model takes; by default at most its tokenizer's `model_max_length`."""
        tokenizer_folders: tuple[Path, ...] = ()
        if tokenizer is not None:
            with contextlib.suppress(ArtifactError):  # a missing tokenizer file is reported as such
                tokenizer_folders = (resolve_source(tokenizer).parent,)
        return checkpoint_token_limit(resolve_source(settings.source), tokenizer_folders)

    def padded_module(self, settings: Any, preprocessing: PreprocessingSettings) -> Any:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModelForSequenceClassification
        from transformers.utils import logging as transformers_logging

        class PairScore(torch.nn.Module):
            """The checkpoint's logit of each pair through the activation: `score` [batch, 1]."""

            def __init__(self, model: torch.nn.Module, activation: torch.nn.Module, token_types: bool) -> None:
                super().__init__()
                self.model = model
                self.activation = activation
                self.token_types = token_types

            def forward(
                self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
            ) -> torch.Tensor:
                if self.token_types:
                    logits = self.model(
                        input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
                    ).logits
                else:  # kept as a graph input (one contract for every family), multiplied away
                    logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
                    logits = logits + 0 * token_type_ids[:, :1].to(logits.dtype)
                return self.activation(logits)

        transformers_logging.set_verbosity_error()
        folder = resolve_source(settings.source)
        known = model_to_build(folder)  # a family the exports do not cover is refused by name
        if preprocessing.max_length > known.tokens:
            raise ArtifactError(f"preprocessing.max_length {preprocessing.max_length} is over {known.tokens_reason()}")
        try:
            _, named = read_cross_encoder(settings.source)
        except ValueError as error:
            raise ArtifactError(str(error)) from None
        activation = activation_module(named)
        model = AutoModelForSequenceClassification.from_pretrained(str(folder), attn_implementation="eager")
        token_types = known.family.token_type_ids and _tokenizer_gives_token_types(preprocessing, folder)
        return PairScore(model.eval(), activation, token_types).eval()
