"""`sentence_embedding`: a sentence-transformers model exported with its own pooling and normalization."""

from __future__ import annotations

from typing import Any, Literal

from generator.base.spec_sources import PackageFile
from generator.kinds.builders.base import Builder, BuildSettings
from generator.kinds.builders.encoder import sentence_embedding_module
from generator.kinds.preprocessing.base import PreprocessingSettings


class EmbeddingBuild(BuildSettings):
    """Export a sentence-transformers model with its own pooling and normalization inside.

    Pooling (`1_Pooling/config.json`) and normalization (a `Normalize` module in `modules.json`)
    are the model's, so the embeddings equal `SentenceTransformer(<source>).encode(...)`.
    """

    builder: Literal["sentence_embedding"]
    """Selects this builder."""
    source: PackageFile
    """The sentence-transformers model folder (`modules.json`, `sentence_bert_config.json`,
    the pooling config, and the transformers `config.json` and weights)."""


class SentenceEmbedding(Builder):
    name = "sentence_embedding"
    settings = EmbeddingBuild
    model_kinds = ("embedding",)
    sentence_transformer = True

    def padded_module(self, settings: Any, preprocessing: PreprocessingSettings) -> Any:
        return sentence_embedding_module(settings.source, preprocessing.max_length)
