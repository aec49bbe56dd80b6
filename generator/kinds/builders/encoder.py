"""The sentence-transformers encoder both encoder builders start from (padded forward).

`SentenceEmbedding` is the model's own pipeline: transformer -> its pooling over the attention
mask (one mode, or several concatenated) -> its `Dense` and `Normalize` modules in
`modules.json` order, so the exported file equals `SentenceTransformer(<source>).encode(...)`.
The transformer must be one of `families.FAMILIES`.
"""

from __future__ import annotations

import os
from typing import Any

from generator.base.source_model import (
    Dense,
    Normalize,
    SentenceTransformerConfig,
    SourceModelError,
    read_sentence_transformer_config,
)
from generator.base.sources import ArtifactError, Source, resolve_source
from generator.kinds.builders.base import Builder
from generator.kinds.builders.families import (
    TokenLimit,
    model_to_build,
    transformers_model,
    unpadded_problem,
    vocabulary_problem,
)


def read_source_config(source: Source) -> SentenceTransformerConfig:
    """The source's sentence-transformers definition; ArtifactError or SourceModelError when it
    is missing or cannot be reproduced."""
    return read_sentence_transformer_config(resolve_source(source))


def sentence_transformer_config(source: Source) -> SentenceTransformerConfig:
    """The source model's sentence-transformers definition (length, pooling, layers after it)."""
    try:
        return read_source_config(source)
    except SourceModelError as error:
        raise ArtifactError(f"model.build.source: {error}") from None


class SentenceTransformerBuilder(Builder):
    """A builder whose source is a sentence-transformers folder (`settings.source`): the
    spec's checks read that folder and its transformer."""

    sentence_transformer = True
    ragged = True

    def token_limit(self, settings: Any, tokenizer: Source | None) -> TokenLimit:
        """Its `max_seq_length`, at most the tokens its transformer takes (`families`)."""
        config = read_source_config(settings.source)
        model = transformers_model(config.encoder_folder)
        if config.max_seq_length > model.tokens:
            return TokenLimit(model.tokens, model.tokens, model.tokens_reason())
        reason = f"the model's max_seq_length {config.max_seq_length} ({config.max_seq_length_file})"
        return TokenLimit(config.max_seq_length, config.max_seq_length, reason)

    def vocabulary_problem(self, settings: Any, tokenizer: Source | None) -> str | None:
        """`families.vocabulary_problem` for its transformer (None also when the source cannot
        be read: the build reports that)."""
        try:
            config = read_source_config(settings.source)
        except (ArtifactError, SourceModelError):
            return None
        return vocabulary_problem(config.encoder_folder, tokenizer)

    def unpadded_problem(self, settings: Any) -> str | None:
        """Why the unpadded encoder cannot export it, or None (also when the source cannot be
        read: the build reports that); any pooling, Dense and Normalize: as padded."""
        try:
            config = read_source_config(settings.source)
        except (ArtifactError, SourceModelError):
            return None
        return unpadded_problem(config.encoder_folder)


def load_encoder(config: SentenceTransformerConfig, max_length: int) -> Any:
    """The transformer of a sentence-transformers folder, offline, in eval mode, for texts of
    up to `max_length` tokens."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as transformers_logging

    model = model_to_build(config.encoder_folder)  # an unsupported family is refused by name
    if max_length > model.tokens:
        raise ArtifactError(f"max_length {max_length} is over {model.tokens_reason()}")
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    torch.manual_seed(0)
    return AutoModel.from_pretrained(str(config.encoder_folder), attn_implementation="eager").eval()


def pool(hidden: Any, attention_mask: Any, mode: str) -> Any:
    """sentence-transformers' `Pooling` of token embeddings [batch, tokens, dim] (padded forward)."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "cls":  # the first unmasked token ([CLS] with right padding)
        first = attention_mask.to(torch.int32).argmax(dim=1)
        return torch.gather(hidden, 1, first.view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])).squeeze(1)
    if mode == "lasttoken":  # the last unmasked token (a fully masked row: the last position)
        values, from_end = attention_mask.to(torch.int32).flip(1).max(dim=1)
        tokens = hidden.shape[1]
        from_end = torch.where(values == 0, tokens - 1, from_end)
        last = (tokens - 1 - from_end).view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])
        return torch.gather(hidden * mask, 1, last).squeeze(1)
    if mode == "max":
        return hidden.masked_fill(mask == 0, float("-inf")).max(dim=1).values
    if mode == "weightedmean":  # position weights 1, 2, ... from the first unmasked token
        positions = torch.arange(1, hidden.shape[1] + 1, dtype=hidden.dtype).view(1, -1, 1)
        weights = mask * (positions - attention_mask.to(torch.int32).argmax(dim=1).view(-1, 1, 1))
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    count = mask.sum(dim=1).clamp(min=1e-9)
    total = (hidden * mask).sum(dim=1)
    if mode == "mean":
        return total / count
    if mode == "mean_sqrt_len_tokens":
        return total / torch.sqrt(count)
    raise ArtifactError(f"pooling mode {mode!r} is not supported")


def _dense_weights(layer: Dense) -> dict[str, Any]:
    """The `linear.*` weights of a Dense module's folder (safetensors, else a torch pickle)."""
    import torch

    safetensors_file, pickle_file = layer.folder / "model.safetensors", layer.folder / "pytorch_model.bin"
    if safetensors_file.exists():
        from safetensors.torch import load_file

        state = load_file(str(safetensors_file))
    elif pickle_file.exists():
        state = torch.load(str(pickle_file), map_location="cpu", weights_only=True)
    else:
        raise ArtifactError(f"{layer.folder}: no model.safetensors or pytorch_model.bin (the Dense weights)")
    return {key.removeprefix("linear."): value for key, value in state.items() if key.startswith("linear.")}


def _activation(layer: Dense) -> Any:
    """The Dense module's activation, instantiated without arguments as sentence-transformers does."""
    import importlib

    import torch

    module_name, _, class_name = layer.activation.rpartition(".")
    try:
        activation_class = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError):
        activation_class = None
    if not isinstance(activation_class, type) or not issubclass(activation_class, torch.nn.Module):
        raise ArtifactError(f"{layer.folder}: activation_function {layer.activation!r} is not a torch.nn module")
    return activation_class()


def sentence_embedding_module(source: Source, max_length: int, normalize: bool = False) -> Any:
    """The padded torch module of a sentence-transformers model in eval mode: encoder -> pooling
    -> its Dense and Normalize modules (`normalize`: add a Normalize last if the model has none
    there)."""
    import torch

    class L2Normalize(torch.nn.Module):
        """sentence-transformers' `Normalize`: unit L2 norm along the last dimension."""

        def forward(self, embedding: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.normalize(embedding, p=2.0, dim=-1)

    class SentenceEmbedding(torch.nn.Module):
        """Encoder -> the model's pooling over the attention mask -> the model's layers after it."""

        def __init__(self, encoder: Any, pooling: tuple[str, ...], layers: list[Any], normalize: bool) -> None:
            super().__init__()
            self.encoder = encoder
            self.pooling = pooling
            self.layers = torch.nn.Sequential(*layers)
            self.normalize = normalize
            """The embeddings are unit length (the last layer is a Normalize)."""

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
            pooled = [pool(hidden, attention_mask, mode) for mode in self.pooling]
            return self.layers(pooled[0] if len(pooled) == 1 else torch.cat(pooled, dim=-1))

    def layer_module(layer: Dense | Normalize) -> torch.nn.Module:
        if isinstance(layer, Normalize):
            return L2Normalize()
        linear = torch.nn.Linear(layer.in_features, layer.out_features, bias=layer.bias)
        linear.load_state_dict(_dense_weights(layer))
        return torch.nn.Sequential(linear, _activation(layer))

    config = sentence_transformer_config(source)
    if max_length > config.max_seq_length:
        raise ArtifactError(f"max_length {max_length} exceeds the model's max_seq_length {config.max_seq_length}")
    layers = list(config.layers)
    if normalize and not config.normalize:
        layers.append(Normalize())
    encoder = load_encoder(config, max_length)
    unit_length = bool(layers) and isinstance(layers[-1], Normalize)
    return SentenceEmbedding(encoder, config.pooling, [layer_module(layer) for layer in layers], unit_length).eval()
