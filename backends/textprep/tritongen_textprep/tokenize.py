"""Tokenization of a batch of texts into padded int64 tensors (no Triton imports here)."""

from __future__ import annotations

import bisect
import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np


class TextError(ValueError):
    """The request's TEXT cannot be tokenized: the client's mistake, answered as INVALID_ARG
    (HTTP 400, gRPC INVALID_ARGUMENT); the message, naming input, item and problem, is sent."""


class Casing(str, Enum):
    """Whether texts are lowercased before tokenization."""

    KEEP = "keep"
    """The tokenizer file's own normalizer."""
    LOWERCASE = "lowercase"
    """BERT normalizer, lowercasing (uncased vocabularies)."""
    CASED = "cased"
    """BERT normalizer, keeping case (cased vocabularies)."""


class Padding(str, Enum):
    """How the texts of one execute call are padded (decides which requests batch together)."""

    BATCH_LONGEST = "batch_longest"
    """Pad to the longest text of the execute call."""
    BUCKETS = "buckets"
    """Round that length up to the next bucket, so requests from different calls share shapes."""
    NONE = "none"
    """No padding, for ragged inference models (`pack_request`): outputs `input_ids` and `lengths`."""


class Inputs(str, Enum):
    """What a request holds (since 1.1.0; 1.0.0 knows `text` only)."""

    TEXT = "text"
    """TEXT [batch, 1]: one text per row."""
    PAIRS = "pairs"
    """QUERY and TEXT [batch, 1]: one (query, text) pair per row, tokenized as a pair."""
    RERANK = "rerank"
    """QUERY [1] and TEXT [n] (a model without batching): the query paired with each text."""


TOKENIZER_FILE = "tokenizer.json"
"""The tokenizer file's name in the model's version folder."""


@dataclass(frozen=True)
class TokenizerSettings:
    """How texts are turned into tensors: the parameter contract of a preprocessing model.

    The generator renders it with `to_parameters`, the model parses it with `from_parameters`:
    the keys, the value syntax and the defaults live here only.
    """

    tokenizer_file: str = TOKENIZER_FILE
    max_length: int = 128
    truncation: bool = True
    casing: Casing = Casing.KEEP
    padding: Padding = Padding.BATCH_LONGEST
    buckets: Tuple[int, ...] = ()
    max_text_bytes: int = 65536
    """Longer texts are rejected (not silently cut)."""
    package_version: str = ""
    """The tritongen-textprep version the model version was made with (checked at load)."""
    threads: int = 1
    """Tokenizer (Rayon) threads of one model instance."""
    inputs: Inputs = Inputs.TEXT
    """What a request holds; pairs also output TOKEN_TYPE_IDS (the segment of each token)."""
    max_texts: int = 0
    """`rerank`: the most texts one request may hold (the inference model's batch limit)."""

    @property
    def lowercase(self) -> Optional[bool]:
        """None keeps the tokenizer's normalizer; True/False forces (un)cased BERT normalizing."""
        return None if self.casing is Casing.KEEP else self.casing is Casing.LOWERCASE

    def to_parameters(self) -> Dict[str, str]:
        """The model config's `parameters` (string values), keys sorted by the renderer."""
        return {
            "tokenizer_file": self.tokenizer_file,
            "max_length": str(self.max_length),
            "truncation": "true" if self.truncation else "false",
            "casing": self.casing.value,
            "padding": self.padding.value,
            "buckets": ",".join(str(b) for b in self.buckets),
            "max_text_bytes": str(self.max_text_bytes),
            "package_version": self.package_version,
            "tokenizer_threads": str(self.threads),
            # Added in 1.1.0, written only when set: 1.0.0's parameters stay as they were.
            **({"inputs": self.inputs.value} if self.inputs is not Inputs.TEXT else {}),
            **({"max_texts": str(self.max_texts)} if self.max_texts else {}),
        }

    @staticmethod
    def from_parameters(parameters: Dict[str, Any], model_dir: str) -> "TokenizerSettings":
        """Parse a Triton model config's `parameters`; unknown enum values are errors."""
        defaults = TokenizerSettings()
        values = {key: entry.get("string_value", "") for key, entry in parameters.items()}

        def value(key: str, default: object) -> str:
            text = values.get(key, "")
            return text if text != "" else str(default)

        try:
            return TokenizerSettings(
                tokenizer_file=os.path.join(model_dir, value("tokenizer_file", defaults.tokenizer_file)),
                max_length=int(value("max_length", defaults.max_length)),
                truncation=value("truncation", "true") == "true",
                casing=Casing(value("casing", defaults.casing.value)),
                padding=Padding(value("padding", defaults.padding.value)),
                buckets=tuple(int(b) for b in values.get("buckets", "").split(",") if b),
                max_text_bytes=int(value("max_text_bytes", defaults.max_text_bytes)),
                package_version=values.get("package_version", ""),
                threads=int(value("tokenizer_threads", defaults.threads)),
                inputs=Inputs(value("inputs", defaults.inputs.value)),
                max_texts=int(value("max_texts", defaults.max_texts)),
            )
        except ValueError as error:
            raise ValueError(f"invalid preprocessing parameters: {error}") from None


def load_tokenizer(settings: TokenizerSettings):  # type: ignore[no-untyped-def]
    """Load a `tokenizers.Tokenizer` with its own padding off (we pad per call).

    Returns (tokenizer, pad_id); pad_id comes from the tokenizer file's padding settings.
    """
    from tokenizers import Tokenizer, normalizers

    tokenizer = Tokenizer.from_file(settings.tokenizer_file)
    pad_id = int((tokenizer.padding or {}).get("pad_id", 0))
    tokenizer.no_padding()
    if settings.truncation:
        tokenizer.enable_truncation(max_length=settings.max_length)
    else:
        tokenizer.no_truncation()
    if settings.lowercase is not None:
        tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=True,
            handle_chinese_chars=True,
            strip_accents=None,
            lowercase=settings.lowercase,
        )
    return tokenizer, pad_id


def decode_texts(raw: Optional[np.ndarray], max_text_bytes: int, name: str = "TEXT") -> List[str]:
    """Decode a [batch, 1] BYTES array (input `name`) into strings, rejecting empty, oversized or
    non-UTF-8 ones."""
    if raw is None:
        raise TextError(f"input {name} is missing: send {name}, BYTES of shape [batch, 1]")
    if raw.ndim != 2 or raw.shape[1] != 1:
        raise TextError(f"input {name} must have shape [batch, 1], got {list(raw.shape)}")
    return _decode_items(raw[:, 0], max_text_bytes, name)


def _decode_items(items: np.ndarray, max_text_bytes: int, name: str) -> List[str]:
    """Decode a flat BYTES array of input `name` into strings (module doc of `decode_texts`)."""
    if items.shape[0] == 0:
        raise TextError(f"input {name} is an empty batch: send at least one text")
    texts = []
    for index, item in enumerate(items):
        data = item if isinstance(item, bytes) else str(item).encode()
        if len(data) == 0:
            # Triton turns an HTTP request without a body into a "raw binary" request: one
            # TEXT element holding the (empty) body, which the model cannot tell from "".
            hint = f" (an HTTP request without body arrives as one empty {name})" if items.shape[0] == 1 else ""
            raise TextError(f"{name}[{index}] is empty{hint}: send a non-empty text")
        if len(data) > max_text_bytes:
            raise TextError(f"{name}[{index}] has {len(data)} bytes, over the limit of {max_text_bytes} bytes")
        try:
            texts.append(data.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise TextError(f"{name}[{index}] is not valid UTF-8: {error.reason} at byte {error.start}") from None
    return texts


def decode_pairs(query: Optional[np.ndarray], text: Optional[np.ndarray], max_text_bytes: int) -> List[Tuple[str, str]]:
    """One request's (query, text) pairs: QUERY and TEXT, both BYTES [batch, 1] with one batch size."""
    texts = decode_texts(text, max_text_bytes, "TEXT")
    if query is None:
        raise TextError("input QUERY is missing: a pair request sends QUERY and TEXT, BYTES of shape [batch, 1]")
    queries = decode_texts(query, max_text_bytes, "QUERY")
    if len(queries) != len(texts):
        raise TextError(f"QUERY has {len(queries)} rows but TEXT has {len(texts)}: send one query per text")
    return list(zip(queries, texts))


def decode_rerank(
    query: Optional[np.ndarray], text: Optional[np.ndarray], max_text_bytes: int, max_texts: int
) -> List[Tuple[str, str]]:
    """A rerank request's pairs: its one QUERY (BYTES [1]) with each of its TEXT (BYTES [n])."""
    if query is None:
        raise TextError("input QUERY is missing: a rerank request sends QUERY, BYTES of shape [1]")
    if text is None:
        raise TextError("input TEXT is missing: a rerank request sends TEXT, BYTES of shape [n] (the texts to rank)")
    if query.ndim != 1 or query.shape[0] != 1:
        raise TextError(f"input QUERY must have shape [1] (one query), got {list(query.shape)}")
    if text.ndim != 1:
        raise TextError(f"input TEXT must have shape [n] (the texts to rank), got {list(text.shape)}")
    if max_texts and text.shape[0] > max_texts:
        raise TextError(f"TEXT has {text.shape[0]} texts, over the limit of {max_texts} per request")
    (query_text,) = _decode_items(query, max_text_bytes, "QUERY")
    return [(query_text, item) for item in _decode_items(text, max_text_bytes, "TEXT")]


@dataclass(frozen=True)
class CallTexts:
    """The texts of all requests of one execute call, and where each request's rows are."""

    texts: List[str]
    """Every valid request's texts, in request order (tokenized together)."""
    rows: List[Union[Tuple[int, int], TextError]]
    """Per request: its (start, stop) rows in `texts`, or why it was rejected."""


def gather_texts(inputs: Sequence[Optional[np.ndarray]], max_text_bytes: int) -> CallTexts:
    """Decode each request's TEXT (None: the request has none); a bad request does not stop the others."""
    texts: List[str] = []
    rows: List[Union[Tuple[int, int], TextError]] = []
    for raw in inputs:
        try:
            decoded = decode_texts(raw, max_text_bytes)
        except TextError as error:
            rows.append(error)
            continue
        rows.append((len(texts), len(texts) + len(decoded)))
        texts.extend(decoded)
    return CallTexts(texts, rows)


@dataclass(frozen=True)
class CallPairs:
    """The (query, text) pairs of all requests of one execute call, and where each request's rows are."""

    pairs: List[Tuple[str, str]]
    """Every valid request's pairs, in request order (tokenized together)."""
    rows: List[Union[Tuple[int, int], TextError]]
    """Per request: its (start, stop) rows in `pairs`, or why it was rejected."""


def gather_pairs(
    requests: Sequence[Tuple[Optional[np.ndarray], Optional[np.ndarray]]], settings: TokenizerSettings
) -> CallPairs:
    """Decode each request's (QUERY, TEXT) as `settings.inputs` says (`pairs` or `rerank`); a bad
    request does not stop the others."""
    pairs: List[Tuple[str, str]] = []
    rows: List[Union[Tuple[int, int], TextError]] = []
    for query, text in requests:
        try:
            if settings.inputs is Inputs.RERANK:
                decoded = decode_rerank(query, text, settings.max_text_bytes, settings.max_texts)
            else:
                decoded = decode_pairs(query, text, settings.max_text_bytes)
        except TextError as error:
            rows.append(error)
            continue
        rows.append((len(pairs), len(pairs) + len(decoded)))
        pairs.extend(decoded)
    return CallPairs(pairs, rows)


def padded_length(longest: int, settings: TokenizerSettings) -> int:
    """The sequence length every row of one execute call is padded to."""
    longest = max(longest, 1)
    if settings.padding is Padding.BUCKETS and settings.buckets:
        position = bisect.bisect_left(settings.buckets, longest)
        if position < len(settings.buckets):
            return settings.buckets[position]
    return longest


def encode(
    tokenizer,
    texts: Sequence[str],
    settings: TokenizerSettings,
    pad_id: int = 0,  # type: ignore[no-untyped-def]
) -> tuple[np.ndarray, np.ndarray]:
    """Tokenize all texts in one `encode_batch` call; return (input_ids, attention_mask), int64."""
    encodings = tokenizer.encode_batch(list(texts))
    length = padded_length(max(len(e.ids) for e in encodings), settings)
    input_ids = np.full((len(encodings), length), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(encodings), length), dtype=np.int64)
    for row, encoding in enumerate(encodings):
        ids = encoding.ids[:length]
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask


def encode_pairs(
    tokenizer,  # type: ignore[no-untyped-def]
    pairs: Sequence[Tuple[str, str]],
    settings: TokenizerSettings,
    pad_id: int = 0,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tokenize (query, text) pairs in one `encode_batch` call, truncated `longest_first` as the
    models' own tokenizers do; return (input_ids, attention_mask, token_type_ids), int64."""
    encodings = tokenizer.encode_batch(list(pairs))
    length = padded_length(max(len(e.ids) for e in encodings), settings)
    input_ids = np.full((len(encodings), length), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(encodings), length), dtype=np.int64)
    token_type_ids = np.zeros((len(encodings), length), dtype=np.int64)
    for row, encoding in enumerate(encodings):
        ids = encoding.ids[:length]
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
        token_type_ids[row, : len(ids)] = encoding.type_ids[:length]
    return input_ids, attention_mask, token_type_ids


def encode_unpadded(tokenizer, texts: Sequence[str]) -> List[List[int]]:  # type: ignore[no-untyped-def]
    """Token ids of each text (truncated as configured, no padding), in one `encode_batch` call."""
    return [list(encoding.ids) for encoding in tokenizer.encode_batch(list(texts))]


def encode_pairs_unpadded(tokenizer, pairs: Sequence[Tuple[str, str]]) -> Tuple[List[List[int]], List[List[int]]]:  # type: ignore[no-untyped-def]
    """(token ids, token types) of each (query, text) pair, truncated `longest_first` as
    `encode_pairs` (no padding), in one `encode_batch` call (since 1.2.0)."""
    encodings = tokenizer.encode_batch(list(pairs))
    return [list(e.ids) for e in encodings], [list(e.type_ids) for e in encodings]


def pack_request(token_ids: Sequence[Sequence[int]], pad_id: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """One request's unpadded outputs for its n texts: `input_ids` [n, ceil(T/n)] and `lengths` [n, 1].

    Triton's ragged batching concatenates each input over the requests of a batch, and every
    input of a request must have the request's batch size n as first dimension: the n texts'
    T tokens are therefore concatenated and reshaped to n rows, the last row filled up with at
    most n - 1 `pad_id` tokens (none for a single text); `lengths` says where each text ends.
    """
    if not token_ids:
        raise TextError("a request needs at least one text")
    lengths = np.array([[len(ids)] for ids in token_ids], dtype=np.int64)
    flat = np.fromiter((t for ids in token_ids for t in ids), dtype=np.int64, count=int(lengths.sum()))
    width = -(-flat.size // len(token_ids))
    packed = np.full(len(token_ids) * width, pad_id, dtype=np.int64)
    packed[: flat.size] = flat
    return packed.reshape(len(token_ids), width), lengths


def pack_pair_request(
    token_ids: Sequence[Sequence[int]], type_ids: Sequence[Sequence[int]], pad_id: int = 0
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pair request's unpadded outputs (since 1.2.0): `input_ids` and `lengths` as
    `pack_request`, and `token_type_ids` packed exactly like `input_ids` (its fill is type 0),
    so that one element count (the ragged batch's token offsets) serves both."""
    input_ids, lengths = pack_request(token_ids, pad_id)
    token_type_ids, _ = pack_request(type_ids, 0)
    return input_ids, lengths, token_type_ids
