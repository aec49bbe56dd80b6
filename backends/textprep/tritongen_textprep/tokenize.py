"""Tokenization of a batch of texts into padded int64 tensors (no Triton imports here)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


class TextError(ValueError):
    """A text of a request cannot be tokenized; the message is sent to the client."""


@dataclass(frozen=True)
class TokenizerSettings:
    """How texts are turned into tensors; read from the preprocessing model's parameters."""

    tokenizer_file: str
    max_length: int = 128
    truncation: bool = True
    lowercase: bool | None = None
    """None keeps the tokenizer's own normalizer; True/False forces (un)cased BERT normalizing."""
    padding: str = "batch_longest"
    """`batch_longest`: pad to the longest text of the execute call; `buckets`: round that up
    to the next bucket, so requests from different calls share shapes and batch together."""
    buckets: tuple[int, ...] = ()
    max_text_bytes: int = 65536

    @staticmethod
    def from_parameters(parameters: dict, model_dir: str) -> TokenizerSettings:
        """Build settings from a Triton model config's `parameters` (string values)."""

        def value(key: str, default: str | None = None) -> str | None:
            entry = parameters.get(key)
            return entry["string_value"] if entry is not None else default

        tokenizer_file = value("tokenizer_file")
        if not tokenizer_file:
            raise ValueError("parameter `tokenizer_file` is required")
        lowercase = value("lowercase", "keep")
        buckets = value("buckets", "") or ""
        return TokenizerSettings(
            tokenizer_file=f"{model_dir}/{tokenizer_file}",
            max_length=int(value("max_length", "128") or 128),
            truncation=(value("truncation", "true") == "true"),
            lowercase=None if lowercase == "keep" else lowercase == "true",
            padding=value("padding", "batch_longest") or "batch_longest",
            buckets=tuple(int(b) for b in buckets.split(",") if b),
            max_text_bytes=int(value("max_text_bytes", "65536") or 65536),
        )


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


def decode_texts(raw: np.ndarray, max_text_bytes: int) -> list[str]:
    """Decode a [batch, 1] BYTES array into strings, rejecting empty, oversized or non-UTF-8 ones."""
    if raw.ndim != 2 or raw.shape[1] != 1:
        raise TextError(f"TEXT must have shape [batch, 1], got {list(raw.shape)}")
    if raw.shape[0] == 0:
        raise TextError("TEXT is an empty batch: send at least one text")
    texts = []
    for index, item in enumerate(raw[:, 0]):
        data = item if isinstance(item, bytes) else str(item).encode()
        if len(data) == 0:
            raise TextError(f"TEXT[{index}] is empty: send a non-empty text")
        if len(data) > max_text_bytes:
            raise TextError(f"TEXT[{index}] has {len(data)} bytes, over the limit of {max_text_bytes} bytes")
        try:
            texts.append(data.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise TextError(f"TEXT[{index}] is not valid UTF-8: {error.reason} at byte {error.start}") from None
    return texts


def padded_length(longest: int, settings: TokenizerSettings) -> int:
    """The sequence length every row of one execute call is padded to."""
    longest = max(longest, 1)
    if settings.padding == "buckets" and settings.buckets:
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
