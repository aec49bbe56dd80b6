"""What the unpadded encoder needs of each encoder family: one small adapter per family.

Every family (`builders/families.py`) is a post-LayerNorm Transformer; they differ only in
where their modules are and in a few details, which `FlatEncoder` reads from the padded
Transformers model and then runs on the flat token stream of `unpadded_encoder`:

- BERT: layers `encoder.layer`, attention `attention.self.query` ..., positions 0, 1, ...;
- RoBERTa, XLM-RoBERTa: as BERT, positions from the padding index + 1;
- ELECTRA: as BERT, then `embeddings_project` when embedding_size != hidden_size;
- DistilBERT: layers `transformer.layer`, attention `attention.q_lin` ..., no token types;
- MPNet: attention `attention.attn.q` ..., positions from the padding index + 1, and a relative
  position bias added to every layer's attention scores (a function of key - query position,
  so the same for each text of a length bucket as for the padded batch).

Positions count from each text's first token (the padded model's right padding gives the
same: RoBERTa-style ids number the non-pad tokens after the padding index). Token types: the
embedding takes them explicitly (`FlatEncoder.embed`); the text graphs pass none, which is
type 0 for every token, what a single text's tokenizer gives; a cross-encoder's pairs pass
theirs where the padded model gets them.

`SequenceHead` is each family's sequence-classification head on the first token's hidden
state: BERT pooler + classifier, DistilBERT pre_classifier + ReLU + classifier, and the
RoBERTa/XLM-R/ELECTRA/MPNet `classifier` heads (which take the `<s>`/`[CLS]` row themselves).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from generator.kinds.builders.families import BY_MODEL_TYPE, supported


class RaggedError(ValueError):
    """A model folder or a request cannot be turned into ragged tensors."""


@dataclass(frozen=True)
class _Names:
    """Where a family keeps its layers and each layer's parts (attribute paths)."""

    layers: str
    query: str
    key: str
    value: str
    attention_out: str
    attention_norm: str
    ffn_in: str
    activation: str
    ffn_out: str
    output_norm: str


_BERT = _Names(
    "encoder.layer",
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "attention.output.LayerNorm",
    "intermediate.dense",
    "intermediate.intermediate_act_fn",
    "output.dense",
    "output.LayerNorm",
)
_NAMES = {
    "bert": _BERT,
    "roberta": _BERT,
    "xlm-roberta": _BERT,
    "electra": _BERT,
    "distilbert": _Names(
        "transformer.layer",
        "attention.q_lin",
        "attention.k_lin",
        "attention.v_lin",
        "attention.out_lin",
        "sa_layer_norm",
        "ffn.lin1",
        "ffn.activation",
        "ffn.lin2",
        "output_layer_norm",
    ),
    "mpnet": _Names(
        "encoder.layer",
        "attention.attn.q",
        "attention.attn.k",
        "attention.attn.v",
        "attention.attn.o",
        "attention.LayerNorm",
        "intermediate.dense",
        "intermediate.intermediate_act_fn",
        "output.dense",
        "output.LayerNorm",
    ),
}
"""Attribute paths by `model_type` (every family of `families.FAMILIES` with `unpadded=True`)."""
MPNET_BUCKETS = 32
MPNET_MAX_DISTANCE = 128
"""MPNet's relative position buckets as its encoder computes them (`compute_position_bias` defaults)."""


def _part(module: Any, path: str) -> Any:
    for name in path.split("."):
        module = getattr(module, name)
    return module


def model_type(config: Any) -> str:
    """The family's `model_type`; RaggedError naming the covered families when it has no adapter."""
    name = str(getattr(config, "model_type", ""))
    family = BY_MODEL_TYPE.get(name)
    if family is None or not family.unpadded or name not in _NAMES:
        raise RaggedError(f"ragged export covers {supported(unpadded=True)}, got model_type {name!r}")
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        raise RaggedError(
            f"ragged export needs absolute position embeddings, the model has {config.position_embedding_type!r}"
        )
    return name


class FlatLayer(torch.nn.Module):
    """One layer's parts: fused Q/K/V (one [hidden, 3 * hidden] matmul), attention output
    projection and norm, feed-forward and its norm (the padded layer's own modules)."""

    qkv_weight: torch.Tensor
    qkv_bias: torch.Tensor

    def __init__(self, layer: Any, names: _Names) -> None:
        super().__init__()
        query, key, value = (_part(layer, path) for path in (names.query, names.key, names.value))
        weight = torch.cat([query.weight, key.weight, value.weight]).detach()
        bias = torch.cat([query.bias, key.bias, value.bias]).detach()
        self.register_buffer("qkv_weight", weight.t().contiguous())
        self.register_buffer("qkv_bias", bias.contiguous())
        self.attention_out = _part(layer, names.attention_out)
        self.attention_norm = _part(layer, names.attention_norm)
        self.ffn_in = _part(layer, names.ffn_in)
        self.activation = _part(layer, names.activation)
        self.ffn_out = _part(layer, names.ffn_out)
        self.output_norm = _part(layer, names.output_norm)

    def qkv(self, hidden: torch.Tensor) -> torch.Tensor:
        """[tokens, 3 * hidden]: queries, keys, values of every token."""
        return torch.addmm(self.qkv_bias, hidden, self.qkv_weight)

    def finish(self, context: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """The layer's output from the attention context of every token."""
        hidden = self.attention_norm(self.attention_out(context) + hidden)
        return self.output_norm(self.ffn_out(self.activation(self.ffn_in(hidden))) + hidden)


class FlatEncoder(torch.nn.Module):
    """A padded Transformers encoder (`AutoModel`, or a classifier's `base_model`), same weights,
    as token-wise parts for the flat token stream."""

    def __init__(self, encoder: Any) -> None:
        super().__init__()
        config = encoder.config
        self.model_type = model_type(config)
        names = _NAMES[self.model_type]
        self.heads = int(config.num_attention_heads)
        self.hidden = int(config.hidden_size)
        self.head_dim = self.hidden // self.heads
        embeddings = encoder.embeddings
        self.word_embeddings = embeddings.word_embeddings
        self.position_embeddings = embeddings.position_embeddings
        self.token_type_embeddings = getattr(embeddings, "token_type_embeddings", None)
        self.embedding_norm = embeddings.LayerNorm
        self.projection = getattr(encoder, "embeddings_project", None)  # ELECTRA
        family = BY_MODEL_TYPE[self.model_type]
        self.position_offset = int(embeddings.padding_idx) + 1 if family.position_offset else 0
        self.layers = torch.nn.ModuleList(FlatLayer(layer, names) for layer in _part(encoder, names.layers))
        relative = getattr(encoder.encoder, "relative_attention_bias", None) if self.model_type == "mpnet" else None
        self.relative_attention_bias = relative
        self._bucket = type(encoder.encoder).relative_position_bucket if relative is not None else None

    def flat_layers(self) -> list[FlatLayer]:
        """The layers, in order."""
        return [layer for layer in self.layers if isinstance(layer, FlatLayer)]

    def embed(
        self, input_ids: torch.Tensor, position: torch.Tensor, token_types: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[tokens, hidden] embeddings of the flat tokens; `position`: each token's index in its
        text; `token_types`: each token's segment (None: 0 for all)."""
        hidden = self.word_embeddings(input_ids) + self.position_embeddings(position + self.position_offset)
        if self.token_type_embeddings is not None:
            if token_types is None:
                hidden = hidden + self.token_type_embeddings.weight[0]
            else:
                hidden = hidden + self.token_type_embeddings(token_types)
        hidden = self.embedding_norm(hidden)
        return self.projection(hidden) if self.projection is not None else hidden

    def position_bias(self, columns: torch.Tensor) -> torch.Tensor | None:
        """MPNet's relative position bias [heads, len, len] for texts padded to `len(columns)`
        (None for the other families): it depends only on key position - query position."""
        if self.relative_attention_bias is None or self._bucket is None:
            return None
        relative = columns.unsqueeze(0) - columns.unsqueeze(1)  # [query, key]: key - query
        bucket = self._bucket(relative, num_buckets=MPNET_BUCKETS, max_distance=MPNET_MAX_DISTANCE)
        return self.relative_attention_bias(bucket).permute(2, 0, 1)


class SequenceHead(torch.nn.Module):
    """A sequence classifier's head on the first token's hidden state [texts, hidden] -> logits."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model_type = model_type(model.config)
        self.pooler = model.base_model.pooler if self.model_type == "bert" else None
        self.pre_classifier = model.pre_classifier if self.model_type == "distilbert" else None
        self.classifier = model.classifier
        if self.model_type == "bert" and self.pooler is None:
            raise RaggedError("a BERT sequence classifier needs its pooler")

    def forward(self, first: torch.Tensor) -> torch.Tensor:
        if self.pre_classifier is not None:  # DistilBERT
            return self.classifier(torch.relu(self.pre_classifier(first)))
        if self.pooler is not None:  # BERT: pooler (dense + tanh of [CLS]), then the classifier
            return self.classifier(self.pooler(first.unsqueeze(1)))
        return self.classifier(first.unsqueeze(1))  # the head takes the first token itself
