"""`cross_encoder`: the exported graph's scores equal `CrossEncoder(folder).predict(pairs)`, with
the activation it applies; folders it cannot reproduce are refused by name."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from generator.base.sources import FolderSource
from generator.kinds.builders import get_builder
from generator.kinds.builders.cross_encoder import CrossEncoderBuild, read_cross_encoder
from generator.kinds.formats import get_format
from generator.kinds.formats.onnx import onnx_runner
from generator.kinds.preprocessing import get_preprocessor
from generator.kinds.preprocessing.textprep import TextPrepSettings
from tests import model_folders

MAX_LENGTH = 128
FOLDERS = {
    "bert": {"token_types": True},  # a BERT tokenizer returns the pair's segments: the model gets them
    "roberta": {"activation": "torch.nn.Identity"},
    "distilbert": {"activation": "torch.nn.modules.activation.Tanh"},
}
"""Family -> `model_folders.cross_encoder` options of the seeded folders."""


def pairs() -> list[tuple[str, str]]:
    long = model_folders.long_text(400)
    return [
        ("what is a cell", "The smallest unit of life."),
        ("what is a cell", "Volcanoes form where magma rises."),
        ("光合作用是什么", "植物利用阳光制造养分。"),
        ("café ☕?", "émojis 🎉 and accents"),
        ("a long passage", long),
        (long, "a long query"),
    ]


@functools.cache
def exported(family: str, tmp: Path) -> tuple[Path, Path]:
    """(the seeded folder, its exported ONNX graph)."""
    folder = model_folders.cross_encoder(family, tmp / family, **FOLDERS[family])  # type: ignore[arg-type]
    build = CrossEncoderBuild(builder="cross_encoder", source=FolderSource(folder=str(folder)))
    output = tmp / f"{family}.onnx"
    get_format("onnx").export(get_builder("cross_encoder"), build, settings(folder), output, None)
    return folder, output


def settings(folder: Path) -> TextPrepSettings:
    tokenizer = FolderSource(folder=str(folder), path="tokenizer.json")
    return TextPrepSettings(tokenizer=tokenizer, max_length=MAX_LENGTH, package_version="1.1.0")


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cross-encoders")


@pytest.mark.parametrize("family", sorted(FOLDERS))
def test_scores_equal_cross_encoder_predict(family: str, tmp: Path) -> None:
    from sentence_transformers import CrossEncoder

    folder, graph = exported(family, tmp)
    batch = pairs()
    ids, mask, types = get_preprocessor("textprep").tokenize_pairs(batch, settings(folder))
    got = onnx_runner(graph, 1)({"input_ids": ids, "attention_mask": mask, "token_type_ids": types})["score"]
    assert got.shape == (len(batch), 1) and got.dtype == np.float32
    want = CrossEncoder(str(folder), max_length=MAX_LENGTH, device="cpu").predict(batch, batch_size=2)
    assert np.abs(got[:, 0] - want).max() <= 1e-4, np.abs(got[:, 0] - want)
    assert list(np.argsort(-got[:, 0], kind="stable")) == list(np.argsort(-want, kind="stable"))
    if family == "roberta":  # Identity: raw logits, some negative
        assert (want < 0).any() or (want > 1).any()
    elif family == "bert":  # the default Sigmoid
        assert ((want > 0) & (want < 1)).all()


def test_scores_depend_on_the_token_types_where_the_tokenizer_gives_them(tmp: Path) -> None:
    folder, graph = exported("bert", tmp)
    ids, mask, types = get_preprocessor("textprep").tokenize_pairs(pairs()[:1], settings(folder))
    run = onnx_runner(graph, 1)
    with_types = run({"input_ids": ids, "attention_mask": mask, "token_type_ids": types})["score"]
    zeros = run({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(types)})["score"]
    assert types.any() and abs(float(with_types[0, 0] - zeros[0, 0])) > 1e-6


def copy_with(folder: Path, target: Path, file: str, changes: dict[str, object]) -> Path:
    shutil.copytree(folder, target)
    data = json.loads((target / file).read_text(encoding="utf-8")) if (target / file).exists() else {}
    (target / file).write_text(json.dumps({**data, **changes}), encoding="utf-8")
    return target


def test_the_activation_is_read_as_sentence_transformers_6_reads_it(tmp: Path) -> None:
    folder, _ = exported("bert", tmp)
    assert read_cross_encoder(FolderSource(folder=str(folder)))[1] == "torch.nn.Sigmoid"
    saved = copy_with(folder, tmp / "st6", "config_sentence_transformers.json", {"activation_fn": "torch.nn.Tanh"})
    assert read_cross_encoder(FolderSource(folder=str(saved)))[1] == "torch.nn.Tanh"


@pytest.mark.parametrize(
    ("file", "changes", "message"),
    [
        ("config.json", {"id2label": {"0": "a", "1": "b"}}, "one label, this checkpoint has 2"),
        ("config_sentence_transformers.json", {"activation_fn": "my.module.Act"}, "only torch.nn activations"),
        ("modules.json", [], "one Transformer module"),
    ],
)
def test_folders_it_cannot_reproduce_are_refused(tmp: Path, file: str, changes: object, message: str) -> None:
    folder, _ = exported("roberta", tmp)
    target = tmp / f"refused-{file}-{len(message)}"
    shutil.copytree(folder, target)
    if isinstance(changes, dict):
        data = json.loads((target / file).read_text(encoding="utf-8")) if (target / file).exists() else {}
        changes = {**data, **changes}
    (target / file).write_text(json.dumps(changes), encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        read_cross_encoder(FolderSource(folder=str(target)))
