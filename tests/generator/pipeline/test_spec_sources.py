"""Specs naming their own checkpoint folders: loaded from anywhere, checked against their pinned
digest, every problem naming the spec file and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from generator.base.sources import FolderSource, source_digest
from generator.pipeline.spec import SpecError, load_spec, parse_spec
from tests.generator.pipeline.checkpoints import checkpoint, file_spec, written


def test_a_folder_outside_the_project_serves_tokenizer_and_model(tmp_path: Path) -> None:
    folder = checkpoint(tmp_path / "store" / "mine")
    spec = load_spec(written(tmp_path, file_spec(folder)))
    version = spec.version(1)
    assert version.preprocessing.tokenizer == FolderSource(folder=str(folder), path="tokenizer.json")
    assert version.model.build.source == FolderSource(folder=str(folder), path="model.onnx")


def test_a_sentence_transformers_folder_gives_its_max_length(tmp_path: Path) -> None:
    folder = checkpoint(tmp_path / "st")
    config = folder / "sentence_bert_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "max_seq_length": 77}), encoding="utf-8")
    data = file_spec(folder)
    data["versions"][0]["preprocessing"].pop("max_length")
    data["versions"][0]["model"]["build"] = {"builder": "sentence_embedding", "source": {"folder": str(folder)}}
    assert load_spec(written(tmp_path, data)).version(1).preprocessing.max_length == 77
    data["versions"][0]["model"]["build"]["source"] = {"folder": str(tmp_path / "gone")}
    with pytest.raises(SpecError, match="max_length: not set, and the model's length cannot be read: folder"):
        parse_spec(yaml.safe_dump(data), "models/mine.yaml")


def test_a_pinned_folder_loads_while_its_content_holds(tmp_path: Path) -> None:
    folder = checkpoint(tmp_path / "mine")
    digest = source_digest(FolderSource(folder=str(folder)))
    path = written(tmp_path, file_spec(folder, digest))
    assert load_spec(path).version(1).model.build.source == FolderSource(
        folder=str(folder), path="model.onnx", digest=digest
    )
    weights = folder / "model.onnx"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x01")
    changed = source_digest(FolderSource(folder=str(folder)))
    with pytest.raises(SpecError) as raised:
        load_spec(path)
    message = str(raised.value)
    assert f"{path}: versions[0].model.build.source.digest: {folder} has digest {changed}, the spec pins {digest}" in (
        message
    )
    assert f"{path}: versions[0].preprocessing.tokenizer.digest: {folder} has digest {changed}" in message
    assert f"`tritongen add {folder} --name mine --force`, or set `digest: {changed}`" in message


def test_a_missing_folder_is_named_with_its_field(tmp_path: Path) -> None:
    folder = checkpoint(tmp_path / "mine")
    data = file_spec(folder)
    data["versions"][0]["model"]["build"]["source"] = {"folder": str(tmp_path / "unmounted"), "path": "model.onnx"}
    data["versions"][0]["preprocessing"]["tokenizer"]["path"] = "nope.json"
    path = written(tmp_path, data)
    with pytest.raises(SpecError) as raised:
        load_spec(path)
    message = str(raised.value)
    assert f"{path}: versions[0].model.build.source: folder '{tmp_path}/unmounted' does not exist" in message
    assert f"{path}: versions[0].preprocessing.tokenizer: 'nope.json' is not in folder '{folder}'" in message


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ({"folder": "../models"}, "versions[0].model.build.source.folder: must be a relative path without '..'"),
        ({"folder": "/mnt", "path": "../x"}, "versions[0].model.build.source.path: must be a relative path"),
        ({"folder": "/mnt", "digest": "sha256:0"}, "versions[0].model.build.source.digest: String should match"),
        ({"path": "model.onnx"}, "versions[0].model.build.source: expected a source mapping with one of the keys"),
    ],
)
def test_bad_folder_sources_name_the_field(tmp_path: Path, source: dict[str, str], expected: str) -> None:
    data = file_spec(tmp_path)
    data["versions"][0]["model"]["build"]["source"] = source
    with pytest.raises(SpecError) as raised:
        parse_spec(yaml.safe_dump(data), "models/mine.yaml")
    assert expected in str(raised.value)
