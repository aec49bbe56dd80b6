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


def decode_texts(raw: Optional[np.ndarray], max_text_bytes: int) -> List[str]:
    """Decode a [batch, 1] BYTES array into strings, rejecting empty, oversized or non-UTF-8 ones."""
    if raw is None:
        raise TextError("input TEXT is missing: send TEXT, BYTES of shape [batch, 1]")
    if raw.ndim != 2 or raw.shape[1] != 1:
        raise TextError(f"input TEXT must have shape [batch, 1], got {list(raw.shape)}")
    if raw.shape[0] == 0:
        raise TextError("input TEXT is an empty batch: send at least one text")
    texts = []
    for index, item in enumerate(raw[:, 0]):
        data = item if isinstance(item, bytes) else str(item).encode()
        if len(data) == 0:
            # Triton turns an HTTP request without a body into a "raw binary" request: one
            # TEXT element holding the (empty) body, which the model cannot tell from "".
            hint = " (an HTTP request without body arrives as one empty TEXT)" if raw.shape[0] == 1 else ""
            raise TextError(f"TEXT[{index}] is empty{hint}: send a non-empty text")
        if len(data) > max_text_bytes:
            raise TextError(f"TEXT[{index}] has {len(data)} bytes, over the limit of {max_text_bytes} bytes")
        try:
            texts.append(data.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise TextError(f"TEXT[{index}] is not valid UTF-8: {error.reason} at byte {error.start}") from None
    return texts


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


def encode_unpadded(tokenizer, texts: Sequence[str]) -> List[List[int]]:  # type: ignore[no-untyped-def]
    """Token ids of each text (truncated as configured, no padding), in one `encode_batch` call."""
    return [list(encoding.ids) for encoding in tokenizer.encode_batch(list(texts))]


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
