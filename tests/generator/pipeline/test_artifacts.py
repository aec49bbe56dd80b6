"""Artifact builds: byte-identical on rebuild, correct graph outputs, clear errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from generator.pipeline.artifacts import ArtifactError, build_artifact, resolve_source, tokenize_like_server
from generator.pipeline.spec import PackageFile, ProjectFile, load_specs

PROJECT = Path(__file__).resolve().parents[3]
SPECS = {s.name: s for s in load_specs(PROJECT / "models")}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("model", ["minilm_embed", "minilm_embed_ts"])
def test_rebuilds_are_byte_identical(tmp_path: Path, model: str) -> None:
    version = SPECS[model].version(1)
    first = build_artifact(version.model, version.preprocessing, tmp_path / "a", progress=lambda _: None)
    second = build_artifact(version.model, version.preprocessing, tmp_path / "b", progress=lambda _: None)
    assert first.key == second.key
    assert sha(first.path) == sha(second.path)


def test_classifier_graph_returns_labels(tmp_path: Path) -> None:
    import onnxruntime as ort

    version = SPECS["text_classifier"].version(1)
    built = build_artifact(version.model, version.preprocessing, tmp_path, progress=lambda _: None)
    ids, mask = tokenize_like_server(["What is 12 times 12?", "Who was Julius Caesar?"], version.preprocessing)
    logits, labels = ort.InferenceSession(str(built.path)).run(None, {"input_ids": ids, "attention_mask": mask})
    assert logits.shape == (2, 4) and labels.shape == (2, 1)
    names = list(version.outputs.labels or ())
    assert [str(v) for v in labels[:, 0]] == [names[i] for i in np.argmax(logits, axis=1)]
    assert [str(v) for v in labels[:, 0]] == ["math", "history"]


def test_missing_sources_are_named() -> None:
    with pytest.raises(ArtifactError, match="package 'no_such_package' is not installed"):
        resolve_source(PackageFile(package="no_such_package", path="x"))
    with pytest.raises(ArtifactError, match="does not exist"):
        resolve_source(ProjectFile(file="models/missing.onnx"))
