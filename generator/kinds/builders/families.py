"""The Transformers encoder families the builders export, and what the project knows of each.

One registry, `FAMILIES`, read from a model folder's `config.json` (`model_type`): how many
tokens per text the model takes, whether it takes `token_type_ids`, and whether the unpadded
(ragged) encoder covers it. The spec checks `preprocessing.max_length` and the ragged formats
against it; the builders refuse a model of any other family by name, before exporting it.

Tokens per text: BERT, DistilBERT and ELECTRA number positions 0, 1, ..., so they take
`max_position_embeddings` tokens; RoBERTa, XLM-RoBERTa and MPNet number them from the padding
index + 1 (`create_position_ids_from_input_ids`), so two position embeddings are never used
for tokens and they take `max_position_embeddings - 2` (514 -> 512).

Adding a family: one `Family` below, after checking that its padded ONNX and TorchScript
exports equal the library for any batch size and sequence length (tests/model_folders.py
makes a small model of every family for that).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from generator.base.source_model import SourceModelError
from generator.base.sources import ArtifactError, Source, resolve_source
from generator.errors import TritongenError


class UnsupportedModelError(TritongenError, ValueError):
    """A model folder's `config.json` names a family the builders do not export."""


@dataclass(frozen=True)
class Family:
    """One encoder family (Transformers `model_type`) and how the exports treat it."""

    name: str
    """Its name in messages and docs."""
    model_type: str
    """`config.json` `model_type`."""
    position_offset: int
    """Position embeddings before the first token's (the padding index + 1 for RoBERTa-style
    position ids, else 0): the model takes `max_position_embeddings - position_offset` tokens."""
    token_type_ids: bool
    """The model has a `token_type_ids` input; the exported graphs do not pass it, so the model
    uses its default of zeros, which is what its tokenizer gives for a single text."""
    unpadded: bool
    """The unpadded encoder of the ragged formats (`formats/unpadded_encoder.py`) covers it."""
    tokenizer: str
    """The tokenizer algorithm of its published checkpoints (docs)."""


FAMILIES: tuple[Family, ...] = (
    Family("BERT", "bert", 0, token_type_ids=True, unpadded=True, tokenizer="WordPiece"),
    Family("DistilBERT", "distilbert", 0, token_type_ids=False, unpadded=True, tokenizer="WordPiece"),
    Family("ELECTRA", "electra", 0, token_type_ids=True, unpadded=True, tokenizer="WordPiece"),
    Family("MPNet", "mpnet", 2, token_type_ids=False, unpadded=True, tokenizer="WordPiece"),
    Family("RoBERTa", "roberta", 2, token_type_ids=True, unpadded=True, tokenizer="byte-level BPE"),
    Family("XLM-RoBERTa", "xlm-roberta", 2, token_type_ids=True, unpadded=True, tokenizer="Unigram (SentencePiece)"),
)
"""Every family the padded formats export (`sentence_embedding`, `transformers_classifier`,
`prototype_classifier`), by `model_type`."""
BY_MODEL_TYPE: dict[str, Family] = {family.model_type: family for family in FAMILIES}


def supported(unpadded: bool = False) -> str:
    """The supported families for messages: `BERT (bert), ...` (`unpadded`: the ragged encoder's)."""
    return ", ".join(f"{f.name} ({f.model_type})" for f in FAMILIES if f.unpadded or not unpadded)


@dataclass(frozen=True)
class TransformersModel:
    """What a model folder's `config.json` says: its family, architecture and length."""

    config_file: Path
    family: Family
    architecture: str
    """`architectures[0]` (e.g. `RobertaForSequenceClassification`), else the `model_type`."""
    max_position_embeddings: int
    vocab_size: int | None = None
    """`config.json` `vocab_size`: rows of the token embedding table (None: not set)."""

    @property
    def tokens(self) -> int:
        """Tokens per text the model takes, special tokens included."""
        return self.max_position_embeddings - self.family.position_offset

    def describe(self) -> str:
        """`RobertaModel (model_type roberta, <config.json>)` for messages."""
        return f"{self.architecture} (model_type {self.family.model_type}, {self.config_file})"

    def tokens_reason(self) -> str:
        """Where `tokens` comes from, for messages."""
        offset = self.family.position_offset
        arithmetic = (
            f"max_position_embeddings {self.max_position_embeddings} - {offset}: {self.family.name} "
            "numbers positions after the padding index"
            if offset
            else f"max_position_embeddings {self.max_position_embeddings}"
        )
        return f"the {self.tokens} tokens the model takes ({self.config_file}: {arithmetic})"


def json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SourceModelError(f"{path} does not exist") from None
    except (OSError, ValueError) as error:
        raise SourceModelError(f"{path}: cannot be read as JSON: {error}") from None
    if not isinstance(data, dict):
        raise SourceModelError(f"{path}: expected a JSON object")
    return data


def transformers_model(folder: Path) -> TransformersModel:
    """The model of a Transformers folder (`config.json`): SourceModelError when it cannot be
    read, UnsupportedModelError naming the model and the supported families when its
    `model_type` is not one of `FAMILIES`."""
    config_file = folder / "config.json"
    config = json_object(config_file)
    model_type = config.get("model_type")
    architectures = config.get("architectures")
    architecture = str(architectures[0]) if isinstance(architectures, list) and architectures else None
    family = BY_MODEL_TYPE.get(str(model_type))
    if family is None:
        named = f"{architecture} (model_type {model_type!r})" if architecture else f"model_type {model_type!r}"
        raise UnsupportedModelError(
            f"{config_file}: {named} is not a supported encoder family: the builders export {supported()}"
        )
    positions = config.get("max_position_embeddings")
    if not isinstance(positions, int) or isinstance(positions, bool) or positions <= family.position_offset:
        raise SourceModelError(
            f"{config_file}: max_position_embeddings: expected an integer over {family.position_offset}, "
            f"got {positions!r}"
        )
    vocab_size = config.get("vocab_size")
    if vocab_size is not None and (not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 1):
        raise SourceModelError(f"{config_file}: vocab_size: expected a positive integer, got {vocab_size!r}")
    return TransformersModel(config_file, family, architecture or family.model_type, positions, vocab_size)


def checkpoint_unpadded_problem(source: Source) -> str | None:
    """`unpadded_problem` of a checkpoint source's folder (None when it cannot be resolved: the
    source checks report that)."""
    try:
        folder = resolve_source(source)
    except ArtifactError:
        return None
    return unpadded_problem(folder)


def unpadded_problem(folder: Path) -> str | None:
    """Why the ragged formats' unpadded encoder cannot run the model of a Transformers folder, or
    None (also when its `config.json` cannot be read: the build reports that)."""
    try:
        model = transformers_model(folder)
        position_type = json_object(model.config_file).get("position_embedding_type", "absolute")
    except (SourceModelError, UnsupportedModelError):
        return None
    if not model.family.unpadded:
        return f"the unpadded encoder covers {supported(unpadded=True)} only, the source is {model.describe()}"
    if position_type != "absolute":
        return (
            f"the unpadded encoder needs absolute position embeddings, {model.describe()} has "
            f"position_embedding_type {position_type!r}"
        )
    return None


def model_to_build(folder: Path) -> TransformersModel:
    """`transformers_model` for a build: ArtifactError when `config.json` cannot be read."""
    try:
        return transformers_model(folder)
    except SourceModelError as error:
        raise ArtifactError(f"model.build.source: {error}") from None


def tokenizer_max_length(*folders: Path) -> tuple[int, Path] | None:
    """(`model_max_length`, file) of the first `tokenizer_config.json` in `folders` that sets one
    (Transformers' 'no limit' sentinel, 1e30, counts as not set); None when none does."""
    for folder in folders:
        path = folder / "tokenizer_config.json"
        if not path.is_file():
            continue
        value = json_object(path).get("model_max_length")
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 10**9:
            return value, path
    return None


@dataclass(frozen=True)
class TokenLimit:
    """The tokens per text a build's model takes: bound and default of `preprocessing.max_length`."""

    most: int
    """The highest `preprocessing.max_length` (a longer text would not fit the model)."""
    default: int
    """`preprocessing.max_length` when the spec omits it."""
    reason: str
    """Where `most` comes from, for messages ('the 512 tokens the model takes (...)')."""


def checkpoint_token_limit(folder: Path, tokenizer_folders: tuple[Path, ...] = ()) -> TokenLimit:
    """`preprocessing.max_length`'s bound and default for a Transformers checkpoint folder: the
    tokens its model takes; the default is capped by the tokenizer's `model_max_length` (the
    first `tokenizer_config.json` of `tokenizer_folders`, then of the checkpoint, that sets one)."""
    model = transformers_model(folder)
    found = tokenizer_max_length(*tokenizer_folders, folder)
    default = model.tokens if found is None else min(model.tokens, found[0])
    return TokenLimit(model.tokens, default, model.tokens_reason())


def tokenizer_vocabulary(path: Path) -> int:
    """The token ids a `tokenizer.json` can give: its highest id + 1 over the model's vocabulary
    and the added tokens (`len(tokenizer)` in Transformers); SourceModelError when unreadable."""
    data = json_object(path)
    model = data.get("model")
    vocab = model.get("vocab") if isinstance(model, dict) else None
    if isinstance(vocab, dict):
        ids = [value for value in vocab.values() if isinstance(value, int)]
    elif isinstance(vocab, list):  # Unigram: [piece, score] in id order
        ids = [len(vocab) - 1] if vocab else []
    else:
        raise SourceModelError(f"{path}: model.vocab: expected a mapping or a list of pieces")
    added = data.get("added_tokens") or []
    ids += [token["id"] for token in added if isinstance(token, dict) and isinstance(token.get("id"), int)]
    if not ids:
        raise SourceModelError(f"{path}: the tokenizer has no vocabulary")
    return max(ids) + 1


def vocabulary_problem(model_folder: Path, tokenizer: Source | None) -> str | None:
    """Why the tokenizer file cannot feed the model of `model_folder`: it gives ids at or above the
    model's `vocab_size`; None when they fit, or when either cannot be read (the source checks
    and the build report that)."""
    if tokenizer is None:
        return None
    try:
        model = transformers_model(model_folder)
        size = tokenizer_vocabulary(resolve_source(tokenizer))
    except (ArtifactError, SourceModelError, UnsupportedModelError):
        return None
    if model.vocab_size is None or size <= model.vocab_size:
        return None
    return (
        f"{resolve_source(tokenizer)} has a vocabulary of {size} tokens (added tokens included), but the model takes "
        f"{model.vocab_size} ({model.config_file}: vocab_size {model.vocab_size}): token ids "
        f"{model.vocab_size} and above would index outside the model's embedding table. Use the "
        "tokenizer the model was trained with"
    )
