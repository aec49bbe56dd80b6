"""Artifact builds: byte-identical on rebuild, equal to sentence-transformers, correct graph outputs, clear errors."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from generator.base.source_model import POOLING_MODES
from generator.base.sources import ArtifactError, PackageFile, ProjectFile, resolve_source
from generator.kinds.builders.encoder import pool
from generator.pipeline.artifacts import BuiltArtifact, build_artifact, tokenize_like_server
from generator.pipeline.spec import load_specs
from tests.integration.assertions import cosines, embedding_texts, reference_embeddings, sentence_transformer

PROJECT = Path(__file__).resolve().parents[3]
SPECS = {s.name: s for s in load_specs(PROJECT / "models")}
EMBEDDING_MODELS = ("minilm_embed_padded", "minilm_embed_ts")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def artifact_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One build per artifact for this module (build_artifact reuses it by key)."""
    return tmp_path_factory.mktemp("artifacts")


def built(model: str, cache: Path) -> BuiltArtifact:
    version = SPECS[model].version(1)
    return build_artifact(version.model, version.preprocessing, cache, progress=lambda _: None)


@pytest.mark.parametrize("model", EMBEDDING_MODELS)
def test_rebuilds_are_byte_identical(tmp_path: Path, artifact_cache: Path, model: str) -> None:
    first = built(model, artifact_cache)
    second = built(model, tmp_path)
    assert first.key == second.key
    assert sha(first.path) == sha(second.path)


def _runner(model: str, path: Path) -> Any:
    """Run a built artifact the way its backend does: (input_ids, attention_mask) -> embeddings."""
    if SPECS[model].version(1).model.format == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path))
        return lambda ids, mask: session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    import torch

    module = torch.jit.load(str(path))

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()

    return run


@pytest.mark.parametrize("model", EMBEDDING_MODELS)
def test_embedding_artifacts_equal_sentence_transformers(artifact_cache: Path, model: str) -> None:
    """The artifact behind the server's own tokenization equals SentenceTransformer(folder).encode,
    for texts of 1 to 1,000 tokens, scripts and whitespace oddities, batched and one by one."""
    preprocessing = SPECS[model].version(1).preprocessing
    assert preprocessing.max_length == 256  # the model's max_seq_length, not the tokenizer file's 128
    labels, texts = zip(*embedding_texts(), strict=True)
    ids, mask = tokenize_like_server(list(texts), preprocessing)
    features = sentence_transformer().preprocess(list(texts))
    want_ids = features["input_ids"].numpy()
    assert want_ids.shape == ids.shape and int(mask.sum(1).max()) == 256
    for row, label in enumerate(labels):  # the same tokens, truncated at the same place
        assert (
            ids[row][mask[row] == 1].tolist() == want_ids[row][features["attention_mask"][row].numpy() == 1].tolist()
        ), label
    run = _runner(model, built(model, artifact_cache).path)
    want = reference_embeddings(texts)
    batched = run(ids, mask)
    single = np.concatenate([run(*tokenize_like_server([text], preprocessing)) for text in texts])
    for got in (batched, single):
        cosine = cosines(got, want)
        assert cosine.min() >= 0.9999, dict(zip(labels, cosine.round(6).tolist(), strict=True))
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)


@pytest.mark.parametrize("mode", POOLING_MODES)
def test_pooling_equals_sentence_transformers(mode: str) -> None:
    import torch
    from sentence_transformers.models import Pooling

    hidden = torch.randn(3, 7, 16, generator=torch.Generator().manual_seed(0))
    mask = (torch.arange(7)[None, :] < torch.tensor([[7], [4], [1]])).to(torch.int64)
    want = Pooling(16, pooling_mode=mode)({"token_embeddings": hidden, "attention_mask": mask})["sentence_embedding"]
    assert torch.allclose(pool(hidden, mask, mode), want, atol=1e-6)


def test_classifier_graph_returns_probabilities_and_labels(tmp_path: Path) -> None:
    import onnxruntime as ort

    version = SPECS["text_classifier"].version(1)
    built = build_artifact(version.model, version.preprocessing, tmp_path, progress=lambda _: None)
    ids, mask = tokenize_like_server(["What is 12 times 12?", "Who was Julius Caesar?"], version.preprocessing)
    session = ort.InferenceSession(str(built.path))
    assert [output.name for output in session.get_outputs()] == ["logits", "probabilities", "label"]
    logits, probabilities, labels = session.run(None, {"input_ids": ids, "attention_mask": mask})
    assert logits.shape == probabilities.shape == (2, 4) and labels.shape == (2, 1)
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    assert np.abs(probabilities - softmax / softmax.sum(1, keepdims=True)).max() <= 1e-6
    names = list(version.outputs.labels or ())
    assert [str(v) for v in labels[:, 0]] == [names[i] for i in np.argmax(logits, axis=1)]
    assert [str(v) for v in labels[:, 0]] == ["math", "history"]


def test_missing_sources_are_named() -> None:
    with pytest.raises(ArtifactError, match="package 'no_such_package' is not installed"):
        resolve_source(PackageFile(package="no_such_package", path="x"))
    with pytest.raises(ArtifactError, match="does not exist"):
        resolve_source(ProjectFile(file="models/missing.onnx"))
