"""`sentence_embedding`: a sentence-transformers model exported with its own pooling and the modules after it."""

from __future__ import annotations

from typing import Any, Literal

from generator.base.sources import Source
from generator.kinds.builders.base import BuildSettings
from generator.kinds.builders.encoder import (
    SentenceTransformerBuilder,
    sentence_embedding_module,
)
from generator.kinds.preprocessing.base import PreprocessingSettings


class EmbeddingBuild(BuildSettings):
    """Export a sentence-transformers model with its own pooling, Dense and Normalize modules inside.

    The transformer is one of the supported families (BERT, DistilBERT, ELECTRA, MPNet, RoBERTa,
    XLM-RoBERTa); the pooling (`1_Pooling/config.json`: any mode, or several concatenated) and
    the `Dense` and `Normalize` modules after it (in `modules.json` order) are the model's, so
    the embeddings equal `SentenceTransformer(<source>).encode(...)`; what `encode` would do
    otherwise (e.g. `do_lower_case`, a default prompt) is refused by name.
    """

    builder: Literal["sentence_embedding"]
    """Selects this builder."""
    source: Source
    """The sentence-transformers model folder as `SentenceTransformer.save` wrote it
    (`modules.json`, `sentence_bert_config.json`, the modules' folders, the transformers
    `config.json` and weights)."""


class SentenceEmbedding(SentenceTransformerBuilder):
    name = "sentence_embedding"
    settings = EmbeddingBuild
    model_kinds = ("embedding",)

    def padded_module(self, settings: Any, preprocessing: PreprocessingSettings) -> Any:
        return sentence_embedding_module(settings.source, preprocessing.max_length)
