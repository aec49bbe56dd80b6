"""The sentence-transformers encoder both encoder builders start from (padded forward).

`SentenceEmbedding` is the model's own pipeline: transformer -> its pooling over the attention
mask -> L2 normalization when the model has a `Normalize` module, so the exported file equals
`SentenceTransformer(<source>).encode(...)`.
"""

from __future__ import annotations

import os
from typing import Any

from generator.base.source_model import SentenceTransformerConfig, SourceModelError, read_sentence_transformer_config
from generator.base.spec_sources import ArtifactError, PackageFile, resolve_source


def sentence_transformer_config(source: PackageFile) -> SentenceTransformerConfig:
    """The source model's sentence-transformers definition (length, pooling, normalization)."""
    try:
        return read_sentence_transformer_config(resolve_source(source))
    except SourceModelError as error:
        raise ArtifactError(f"{source.package}/{source.path}: {error}") from None


def load_encoder(config: SentenceTransformerConfig) -> Any:
    """The transformer of a sentence-transformers folder, offline, in eval mode."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    torch.manual_seed(0)
    model = AutoModel.from_pretrained(str(config.encoder_folder), attn_implementation="eager")
    positions = getattr(model.config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions < config.max_seq_length:
        raise ArtifactError(
            f"{config.encoder_folder}: max_seq_length {config.max_seq_length} exceeds the model's "
            f"{positions} position embeddings"
        )
    return model.eval()


def pool(hidden: Any, attention_mask: Any, mode: str) -> Any:
    """sentence-transformers' `Pooling` of token embeddings [batch, tokens, dim] (padded forward)."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "cls":  # the first unmasked token ([CLS] with right padding)
        first = attention_mask.to(torch.int32).argmax(dim=1)
        return torch.gather(hidden, 1, first.view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])).squeeze(1)
    if mode == "max":
        return hidden.masked_fill(mask == 0, float("-inf")).max(dim=1).values
    count = mask.sum(dim=1).clamp(min=1e-9)
    total = (hidden * mask).sum(dim=1)
    if mode == "mean":
        return total / count
    if mode == "mean_sqrt_len_tokens":
        return total / torch.sqrt(count)
    raise ArtifactError(f"pooling mode {mode!r} is not supported")


def sentence_embedding_module(source: PackageFile, max_length: int, normalize: bool | None = None) -> Any:
    """The padded torch module of a sentence-transformers model in eval mode: encoder -> pooling
    -> normalization (`normalize` None: as the model defines it)."""
    import torch

    class SentenceEmbedding(torch.nn.Module):
        """Encoder -> the model's pooling over the attention mask -> L2 normalization if the model has it."""

        def __init__(self, encoder: Any, pooling: str, normalize: bool) -> None:
            super().__init__()
            self.encoder = encoder
            self.pooling = pooling
            self.normalize = normalize

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
            pooled = pool(hidden, attention_mask, self.pooling)
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
            return pooled

    config = sentence_transformer_config(source)
    if max_length > config.max_seq_length:
        raise ArtifactError(f"max_length {max_length} exceeds the model's max_seq_length {config.max_seq_length}")
    encoder = load_encoder(config)
    return SentenceEmbedding(encoder, config.pooling, config.normalize if normalize is None else normalize).eval()
