"""Unpadded ("ragged") encoders of every family for Triton's ragged batching.

Contract of the exported model (ONNX and TorchScript, same names, same order):

| input          | type  | graph shape | config                                                      |
| -------------- | ----- | ----------- | ----------------------------------------------------------- |
| `input_ids`    | INT64 | `[-1]`      | dims `[-1]`, `allow_ragged_batch: true`                     |
| `lengths`      | INT64 | `[-1]`      | dims `[1]`, `allow_ragged_batch: true`                      |
| `token_offsets`| INT32 | `[-1]`      | `batch_input` BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO of `input_ids` |
| `text_offsets` | INT32 | `[-1]`      | `batch_input` BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO of `lengths`   |

Output `embedding` FP32 `[texts, dim]` (`RaggedSentenceEmbedding`: the model's pooling, any
mode of the padded path or several concatenated, then its Dense and Normalize modules), or
`logits` `[texts, labels]` (`RaggedPrototypeClassifier`; `RaggedSequenceClassifier`: a
checkpoint's own classification head); one row per text in request order, which Triton splits
back by each request's batch size; or `score` `[texts, 1]` (`RaggedCrossEncoder`: a reranker's
(query, text) pairs, which also take `token_type_ids` INT64 `[-1]`, config dims `[-1]` with
`allow_ragged_batch: true`, packed exactly like `input_ids`, so `token_offsets` counts both;
`PAIR_INPUT_NAMES` gives the order). `ragged_from_padded` turns the padded builder modules of
`Builder.padded_module` into these, with the same weights, pooling, layers and prototypes.
The families differ only in the parts `unpadded_families` reads from the padded model.

Why two data inputs and two batch inputs (a trap of Triton's batch inputs, docs/ngc-standin.md): an element-count
batch input counts REQUESTS, but a request may carry n texts (`TEXT` of shape `[n, 1]`), and a
composing model's inputs must all have that request's batch size n as first dimension. So
the tokenizer emits, per request (`pack_request`):

- `input_ids` of shape `[n, ceil(T / n)]`: the n texts' tokens concatenated (T tokens), then
  up to n - 1 pad tokens so that the shape is rectangular (none when n == 1, the usual case);
- `lengths` of shape `[n, 1]`: each text's token count, as data.

Triton concatenates each ragged input over the batch's R requests in request order; the two
batch inputs ([R + 1] each, starting at 0) give where each request's tokens and texts start.
Text j of request r then starts at `token_offsets[r] + sum(lengths of r's earlier texts)`; a
request's texts must be contiguous from its first token, and whatever follows its last text
(the pad tokens) is ignored.

Inside the graph every token-wise layer (embeddings with per-text position ids, fused QKV,
attention output projection, feed-forward, layer norms) runs on the flat `[tokens, hidden]`
tensor: no padding. Only attention (and pooling) gathers tokens into `[texts, max_len]` blocks
with a key mask, and back. Texts are grouped into length buckets (`DEFAULT_BUCKETS`: <=32,
<=64, <=128, longer) and each bucket is padded only to its own longest text, so one 250-token
text in a batch of 40-token sentences no longer pads everyone's attention to 250 (the
long-tail trap). Empty buckets are zero-sized tensors. ONNX Runtime has no packed attention on
CPU, so all of this is plain ONNX (Gather, MatMul, Softmax, NonZero, CumSum).

Composing model config (batch inputs must be TYPE_INT32 or TYPE_FP32; this graph takes INT32):

    input [
      { name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] allow_ragged_batch: true },
      { name: "lengths" data_type: TYPE_INT64 dims: [ 1 ] allow_ragged_batch: true }
    ]
    batch_input [
      { kind: BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO target_name: "token_offsets"
        data_type: TYPE_INT32 source_input: "input_ids" },
      { kind: BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO target_name: "text_offsets"
        data_type: TYPE_INT32 source_input: "lengths" }
    ]
    output [ { name: "embedding" data_type: TYPE_FP32 dims: [ 384 ] } ]

The pytorch backend passes inputs by `forward` argument name (`RaggedSentenceEmbedding.forward`
uses exactly these names). Exports are deterministic (TorchScript archives are normalised
like the padded ones, see `torchscript.deterministic_archive`).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from generator.kinds.builders.encoder import pool
from generator.kinds.formats import torchscript
from generator.kinds.formats.onnx import ONNX_OPSET
from generator.kinds.formats.unpadded_families import FlatEncoder, RaggedError, SequenceHead

__all__ = [
    "DEFAULT_BUCKETS",
    "INPUT_NAMES",
    "OUTPUT_NAME",
    "PAIR_INPUT_NAMES",
    "RaggedCrossEncoder",
    "RaggedError",
    "RaggedPrototypeClassifier",
    "RaggedSentenceEmbedding",
    "RaggedSequenceClassifier",
    "export_onnx",
    "export_torchscript",
    "load_ragged_module",
    "pack_request",
    "ragged_from_padded",
    "sample_inputs",
]

INPUT_NAMES = ("input_ids", "lengths", "token_offsets", "text_offsets")
"""Graph inputs in order (TorchScript: the `forward` argument names)."""
PAIR_INPUT_NAMES = ("input_ids", "lengths", "token_type_ids", "token_offsets", "text_offsets")
"""`RaggedCrossEncoder`'s graph inputs in order: each token's segment after its id and lengths."""
OUTPUT_NAME = "embedding"
DEFAULT_BUCKETS = (32, 64, 128)
"""Upper length bounds of the attention buckets; texts longer than the last form one more."""
_MASKED = -1.0e9
"""Added to attention scores of padded key positions (exp underflows to exactly 0)."""

Block = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""One length bucket: token rows [texts, len] (pads -> row 0), additive attention bias
[texts, 1 or heads, len, len] (key mask, MPNet's relative positions), valid mask [texts, len]."""


def pack_request(token_ids: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The tokenizer's per-request outputs for n texts: (`input_ids` [n, ceil(T/n)], `lengths` [n, 1]).

    The texts' tokens are concatenated; at most n - 1 `pad_id` tokens fill the last row.
    """
    if not token_ids:
        raise RaggedError("a request needs at least one text")
    count = len(token_ids)
    lengths = np.array([[len(ids)] for ids in token_ids], dtype=np.int64)
    if int(lengths.min()) < 1:
        raise RaggedError("every text needs at least one token")
    flat = np.fromiter((t for ids in token_ids for t in ids), dtype=np.int64, count=int(lengths.sum()))
    width = math.ceil(flat.size / count)
    packed = np.full(count * width, pad_id, dtype=np.int64)
    packed[: flat.size] = flat
    return packed.reshape(count, width), lengths


class L2Normalize(torch.nn.Module):
    """Unit L2 norm per row (sentence-transformers' `Normalize`)."""

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(embedding, p=2.0, dim=-1)


class _RaggedEncoder(torch.nn.Module):
    """A family's encoder on concatenated token ids: `encode` gives every token's final hidden
    state [tokens, hidden], each text's first token, and the length buckets."""

    def __init__(self, encoder: Any, buckets: Sequence[int]) -> None:
        super().__init__()
        if list(buckets) != sorted(set(buckets)) or (buckets and buckets[0] < 1):
            raise RaggedError(f"buckets must be increasing positive lengths, got {list(buckets)}")
        self.flat = FlatEncoder(encoder)
        self.buckets = tuple(int(b) for b in buckets)

    def encode(
        self,
        input_ids: torch.Tensor,
        lengths: torch.Tensor,
        token_offsets: torch.Tensor,
        text_offsets: torch.Tensor,
        token_types: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, list[Block]]:
        """`token_types`: each token's segment, packed as `input_ids` (None: 0 for every token)."""
        token_offsets = token_offsets.to(torch.int64)
        text_offsets = text_offsets.to(torch.int64)
        lengths = lengths.to(torch.int64)
        starts = _text_starts(lengths, token_offsets, text_offsets)
        tokens = torch.arange(input_ids.shape[0], dtype=torch.int64)
        # Text of each token (the last text starting at or before it: a running count of text
        # starts, O(tokens) memory) and its position there.
        marks = torch.zeros_like(tokens).scatter_add(0, starts, torch.ones_like(starts))
        text_of_token = (torch.cumsum(marks, 0) - 1).clamp(min=0)
        position = tokens - starts[text_of_token]
        real = position < lengths[text_of_token]  # False for the pad tokens that fill a request
        position = torch.where(real, position, torch.zeros_like(position))

        blocks, slots = self._blocks(starts, lengths)
        slot = slots[text_of_token] + position
        back = torch.where(real, slot, torch.zeros_like(slot))  # padded-buffer row of each token

        flat = self.flat
        hidden = flat.embed(input_ids, position, token_types)
        for layer in flat.flat_layers():
            qkv = layer.qkv(hidden)
            context = torch.cat([self._attend(qkv, gather, bias) for gather, bias, _ in blocks])[back]
            hidden = layer.finish(context, hidden)
        return hidden, starts, blocks

    def _bucket_of(self, lengths: torch.Tensor) -> torch.Tensor:
        bucket = torch.zeros_like(lengths)
        for bound in self.buckets:
            bucket = bucket + (lengths > bound).to(torch.int64)
        return bucket

    def _blocks(self, starts: torch.Tensor, lengths: torch.Tensor) -> tuple[list[Block], torch.Tensor]:
        """Per bucket its `Block`; and each text's first row in the concatenated padded buffer
        of all buckets."""
        bucket = self._bucket_of(lengths)
        blocks = []
        slots = torch.zeros_like(lengths)
        base = torch.zeros((), dtype=torch.int64)
        for index in range(len(self.buckets) + 1):
            member = bucket == index
            selected = torch.nonzero(member)[:, 0]
            member_lengths = lengths[selected]
            longest = (lengths * member.to(torch.int64)).max().clamp(min=1)
            columns = torch.arange(longest, dtype=torch.int64)  # type: ignore[call-overload]  # traced: dynamic
            valid = columns.unsqueeze(0) < member_lengths.unsqueeze(1)
            rows = starts[selected].unsqueeze(1) + columns.unsqueeze(0)
            gather = torch.where(valid, rows, torch.zeros_like(rows))
            bias = torch.where(valid, 0.0, _MASKED).to(torch.float32).unsqueeze(1).unsqueeze(1)
            relative = self.flat.position_bias(columns)
            if relative is not None:
                bias = bias + relative.unsqueeze(0)
            blocks.append((gather, bias, valid))
            rank = torch.cumsum(member.to(torch.int64), 0) - 1
            slots = torch.where(member, base + rank * longest, slots)
            base = base + selected.shape[0] * longest
        return blocks, slots

    def _pooled_order(self, lengths: torch.Tensor) -> torch.Tensor:
        """Row of each text (input order) among the pooled rows, which come bucket by bucket."""
        bucket = self._bucket_of(lengths.to(torch.int64))
        order = torch.zeros_like(bucket)
        before = torch.zeros((), dtype=torch.int64)
        for index in range(len(self.buckets) + 1):
            member = bucket == index
            counted = member.to(torch.int64)
            order = torch.where(member, before + torch.cumsum(counted, 0) - 1, order)
            before = before + counted.sum()
        return order

    def _attend(self, qkv: torch.Tensor, gather: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Attention of one bucket: [texts * len, hidden] context rows of its padded block."""
        flat = self.flat
        block = qkv[gather]  # [texts, len, 3 * hidden]
        block = block.reshape(gather.shape[0], gather.shape[1], 3, flat.heads, flat.head_dim)
        block = block.permute(2, 0, 3, 1, 4)  # [3, texts, heads, len, head_dim]
        query, key, value = block[0], block[1], block[2]
        scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(flat.head_dim) + bias
        context = torch.matmul(torch.softmax(scores, dim=-1), value)  # [texts, heads, len, head_dim]
        return context.permute(0, 2, 1, 3).reshape(-1, flat.hidden)


class RaggedSentenceEmbedding(_RaggedEncoder):
    """The encoder on concatenated token ids, the model's pooling per text, then its layers.

    `pooling`: modes of the padded path (`encoder.pool`), concatenated in order; `layers`: the
    modules after pooling (Dense, Normalize; default: an L2 normalisation when `normalize`);
    `normalize`: whether the output is unit length.
    """

    def __init__(
        self,
        encoder: Any,
        normalize: bool = True,
        buckets: Sequence[int] = DEFAULT_BUCKETS,
        pooling: Sequence[str] = ("mean",),
        layers: torch.nn.Module | None = None,
    ) -> None:
        super().__init__(encoder, buckets)
        if not pooling:
            raise RaggedError("pooling needs at least one mode")
        self.pooling = tuple(pooling)
        self.layers = layers if layers is not None else torch.nn.Sequential(*([L2Normalize()] if normalize else []))
        self.normalize = normalize

    def forward(
        self,
        input_ids: torch.Tensor,
        lengths: torch.Tensor,
        token_offsets: torch.Tensor,
        text_offsets: torch.Tensor,
    ) -> torch.Tensor:
        hidden, _, blocks = self.encode(input_ids, lengths, token_offsets, text_offsets)
        pooled = torch.cat([self._pool(hidden[gather], valid.to(torch.int64)) for gather, _, valid in blocks])
        return self.layers(pooled[self._pooled_order(lengths)])

    def _pool(self, block: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The padded path's pooling of one bucket (texts right-padded to its longest)."""
        pooled = [pool(block, mask, mode) for mode in self.pooling]
        return pooled[0] if len(pooled) == 1 else torch.cat(pooled, dim=-1)


class RaggedSequenceClassifier(_RaggedEncoder):
    """A Transformers sequence classifier on concatenated token ids: its head on each text's
    first token (`unpadded_families.SequenceHead`), `logits` [texts, labels]."""

    def __init__(self, model: Any, buckets: Sequence[int] = DEFAULT_BUCKETS) -> None:
        super().__init__(model.base_model, buckets)
        self.head = SequenceHead(model)

    def forward(
        self,
        input_ids: torch.Tensor,
        lengths: torch.Tensor,
        token_offsets: torch.Tensor,
        text_offsets: torch.Tensor,
    ) -> torch.Tensor:
        hidden, starts, _ = self.encode(input_ids, lengths, token_offsets, text_offsets)
        return self.head(hidden[starts])


class RaggedCrossEncoder(_RaggedEncoder):
    """A reranker's (query, text) pairs on concatenated token ids: the checkpoint's sequence head
    on each pair's first token, through its activation: `score` [pairs, 1]. Token types reach the
    model when the padded module passes them (`token_types`, as `CrossEncoder` does); otherwise
    the model gets its default, type 0, and `token_type_ids` is multiplied away (kept as a graph
    input: one contract for every family)."""

    pairs = True

    def __init__(
        self, model: Any, activation: torch.nn.Module, token_types: bool, buckets: Sequence[int] = DEFAULT_BUCKETS
    ) -> None:
        super().__init__(model.base_model, buckets)
        self.head = SequenceHead(model)
        self.activation = activation
        self.token_types = bool(token_types)

    def forward(
        self,
        input_ids: torch.Tensor,
        lengths: torch.Tensor,
        token_type_ids: torch.Tensor,
        token_offsets: torch.Tensor,
        text_offsets: torch.Tensor,
    ) -> torch.Tensor:
        types = token_type_ids if self.token_types else None
        hidden, starts, _ = self.encode(input_ids, lengths, token_offsets, text_offsets, types)
        logits = self.head(hidden[starts])
        if not self.token_types:
            logits = logits + 0 * token_type_ids[:1].to(logits.dtype)
        return self.activation(logits)


class RaggedPrototypeClassifier(torch.nn.Module):
    """`scale` x cosine similarity of the ragged embedding to each label's prototype: `logits`."""

    def __init__(self, embedding: RaggedSentenceEmbedding, prototypes: torch.Tensor, scale: float) -> None:
        super().__init__()
        if not embedding.normalize:
            raise RaggedError("a prototype classifier needs normalized embeddings")
        self.embedding = embedding
        self.register_buffer("prototypes", prototypes.detach().clone())
        self.scale = float(scale)

    def forward(
        self,
        input_ids: torch.Tensor,
        lengths: torch.Tensor,
        token_offsets: torch.Tensor,
        text_offsets: torch.Tensor,
    ) -> torch.Tensor:
        embedding = self.embedding(input_ids, lengths, token_offsets, text_offsets)
        return self.scale * embedding @ self.prototypes.T


def ragged_from_padded(module: Any, buckets: Sequence[int] = DEFAULT_BUCKETS) -> torch.nn.Module:
    """The ragged counterpart, same weights, of a padded builder module of `Builder.padded_module`:
    `SentenceEmbedding` (`.encoder`, `.normalize`, and `.pooling`, `.layers` when it has them),
    `PrototypeClassifier` (`.embedding`, `.prototypes`, `.scale`), a cross-encoder's `PairScore`
    (`.model`, `.activation`, `.token_types`) or a sequence classifier's `SequenceLogits` (`.model`)."""
    if hasattr(module, "prototypes"):
        embedding = _embedding(module.embedding, buckets)
        return RaggedPrototypeClassifier(embedding, module.prototypes, float(module.scale)).eval()
    if hasattr(module, "activation") and hasattr(module, "token_types"):
        return RaggedCrossEncoder(module.model, module.activation, bool(module.token_types), buckets).eval()
    if hasattr(module, "model"):
        return RaggedSequenceClassifier(module.model, buckets).eval()
    return _embedding(module, buckets).eval()


def _embedding(module: Any, buckets: Sequence[int]) -> RaggedSentenceEmbedding:
    pooling = tuple(getattr(module, "pooling", ("mean",)))
    layers = getattr(module, "layers", None)
    return RaggedSentenceEmbedding(module.encoder, bool(module.normalize), buckets, pooling, layers)


def _text_starts(lengths: torch.Tensor, token_offsets: torch.Tensor, text_offsets: torch.Tensor) -> torch.Tensor:
    """First token of each text: its request's first token + lengths of its earlier texts there."""
    texts = torch.arange(lengths.shape[0], dtype=torch.int64)
    request = (texts.unsqueeze(1) >= text_offsets[1:].unsqueeze(0)).to(torch.int64).sum(1)
    before = torch.cumsum(lengths, 0) - lengths  # tokens of all earlier texts of the batch
    first_text = text_offsets[:-1][request]
    return token_offsets[:-1][request] + before - before[first_text]


# --- building and exporting -----------------------------------------------------------------


def load_ragged_module(
    model_dir: Path, normalize: bool = True, buckets: Sequence[int] = DEFAULT_BUCKETS
) -> RaggedSentenceEmbedding:
    """The mean-pooling ragged module of a transformers model folder (any covered family), in eval mode."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    torch.manual_seed(0)
    encoder = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    return RaggedSentenceEmbedding(encoder, normalize, buckets).eval()


def sample_inputs(pairs: bool = False) -> tuple[torch.Tensor, ...]:
    """Tracing inputs: two requests, the second with two texts (one pad token), several buckets;
    `pairs`: also `token_type_ids` (each text's second half type 1), in `PAIR_INPUT_NAMES` order."""
    # Small token ids, valid in any vocabulary.
    requests = [[[2] + [10 + i for i in range(40)] + [3]], [[2, 5, 3], [2, 6, 7, 3]]]
    packed = [pack_request(texts) for texts in requests]
    ids = np.concatenate([p[0].ravel() for p in packed])
    lengths = np.concatenate([p[1].ravel() for p in packed])
    token_offsets = np.cumsum([0] + [p[0].size for p in packed]).astype(np.int32)
    text_offsets = np.cumsum([0] + [p[1].size for p in packed]).astype(np.int32)
    if not pairs:
        return tuple(torch.from_numpy(a) for a in (ids, lengths, token_offsets, text_offsets))
    segments = [pack_request([[int(i >= len(t) // 2) for i in range(len(t))] for t in texts]) for texts in requests]
    types = np.concatenate([s[0].ravel() for s in segments])
    return tuple(torch.from_numpy(a) for a in (ids, lengths, types, token_offsets, text_offsets))


def input_names(module: torch.nn.Module) -> tuple[str, ...]:
    """The graph inputs of a ragged module, in order (`PAIR_INPUT_NAMES` for a cross-encoder)."""
    return PAIR_INPUT_NAMES if getattr(module, "pairs", False) else INPUT_NAMES


def export_onnx(module: torch.nn.Module, output: Path, output_name: str = OUTPUT_NAME) -> None:
    """ONNX (opset 17, TorchScript-based exporter); every input exactly `[-1]`, output `[-1, width]`.

    `output_name`: `embedding`, `score` for a cross-encoder, or `logits` for a classifier (then
    `onnx.append_classifier_outputs` adds the classifier tail as for the padded graph).
    """
    import onnx

    names = input_names(module)
    sample = sample_inputs(pairs=names == PAIR_INPUT_NAMES)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            sample,
            str(output),
            input_names=list(names),
            output_names=[output_name],
            dynamic_axes={
                **{name: {0: f"{name}_count"} for name in names},
                output_name: {0: "texts"},
            },
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
        width = int(module(*sample).shape[1])
    graph_model = onnx.load(str(output))
    out_dims = graph_model.graph.output[0].type.tensor_type.shape.dim
    out_dims[1].Clear()
    out_dims[1].dim_value = width  # the exporter leaves it symbolic
    graph_model.producer_name = "tritongen"
    graph_model.producer_version = ""
    onnx.checker.check_model(graph_model)
    onnx.save(graph_model, str(output))


def export_torchscript(module: torch.nn.Module, output: Path) -> None:
    """Traced, frozen TorchScript with byte-identical output for identical weights."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torchscript.export_torchscript(module, sample_inputs(pairs=input_names(module) == PAIR_INPUT_NAMES), output)
