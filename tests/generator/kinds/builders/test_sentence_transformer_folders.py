"""sentence-transformers folders of any shape the builder exports: every pooling mode (alone or
concatenated), Dense modules with their activation, with or without Normalize.

The folders are small random models saved by sentence-transformers itself
(`tests/model_folders.py`); the exported files must give `SentenceTransformer(folder).encode`'s
embeddings for batches of other lengths than the tracing sample's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from generator.kinds.formats.onnx import onnx_runner
from generator.pipeline.artifacts import build_artifact, tokenize_like_server
from tests import model_folders
from tests.generator.kinds.builders.test_families import TEXTS, cosines, embedding_runner, spec, version_of

SHAPES: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("bert", {"pooling": "cls"}, ("onnx",)),
    ("roberta", {"pooling": "max", "normalize": False}, ("onnx",)),
    ("distilbert", {"pooling": "mean_sqrt_len_tokens", "normalize": False}, ("onnx",)),
    ("xlm-roberta", {"pooling": "lasttoken"}, ("onnx", "torchscript")),
    ("mpnet", {"pooling": "weightedmean"}, ("onnx", "torchscript")),
    ("electra", {"pooling": ("cls", "mean")}, ("onnx",)),
    ("bert", {"dense": (16,)}, ("onnx", "torchscript")),
    ("roberta", {"pooling": "cls", "dense": (24, 8), "activation": "GELU", "normalize": False}, ("onnx",)),
]
"""(family, `model_folders.sentence_transformer` options, formats checked)."""


@pytest.mark.parametrize(("family", "options", "formats"), SHAPES, ids=[f"{f}-{o}" for f, o, _ in SHAPES])
def test_embeddings_equal_sentence_transformers(
    family: str, options: dict[str, Any], formats: tuple[str, ...], tmp_path: Path
) -> None:
    from sentence_transformers import SentenceTransformer

    folder = model_folders.cached_sentence_transformer(family, **options)
    reference = SentenceTransformer(str(folder), device="cpu")
    dim = reference.get_embedding_dimension()
    for model_format in formats:
        data = spec(folder, model_format=model_format)
        data["versions"][0]["outputs"]["embedding_dim"] = dim
        version = version_of(data)
        run = embedding_runner(model_format, build_artifact(version.model, version.preprocessing, tmp_path).path)
        for texts in (TEXTS, TEXTS[1:4], TEXTS[:1]):
            ids, mask = tokenize_like_server(texts, version.preprocessing)
            want = reference.encode(texts, convert_to_numpy=True)
            got = run(ids, mask)
            assert got.shape == (len(texts), dim)
            assert cosines(got, want).min() >= 0.9999, (model_format, ids.shape)
            assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max())), (model_format, ids.shape)
    normalized = options.get("normalize", True)
    assert np.allclose(np.linalg.norm(want, axis=1), 1.0, atol=1e-5) == normalized


def test_a_prototype_classifier_on_any_shape_compares_normalized_embeddings(tmp_path: Path) -> None:
    """`prototype_classifier` on a model with Dense and no Normalize: logits = scale x cosine of
    sentence-transformers' embeddings to each label's mean embedding."""
    from sentence_transformers import SentenceTransformer

    folder = model_folders.cached_sentence_transformer(
        "roberta", pooling="cls", dense=(24, 8), activation="GELU", normalize=False
    )
    examples = {
        "plants": ["How do plants make food?", "光合作用"],
        "travel": ["Où est la gare?", "東京は日本の首都です。"],
    }
    data = spec(folder)
    data["kind"] = "classifier"
    data["versions"][0]["model"]["build"] = {
        "builder": "prototype_classifier",
        "source": {"folder": str(folder)},
        "labels": examples,
    }
    data["versions"][0]["outputs"] = {"labels": list(examples)}
    version = version_of(data)
    built = build_artifact(version.model, version.preprocessing, tmp_path, lambda _: None)
    reference = SentenceTransformer(str(folder), device="cpu")
    prototypes = np.stack([reference.encode(texts, normalize_embeddings=True).mean(0) for texts in examples.values()])
    prototypes /= np.linalg.norm(prototypes, axis=1, keepdims=True)
    ids, mask = tokenize_like_server(TEXTS, version.preprocessing)
    served = onnx_runner(built.path, 2)({"input_ids": ids, "attention_mask": mask})
    want = 20.0 * reference.encode(TEXTS, normalize_embeddings=True) @ prototypes.T
    assert np.abs(served["logits"] - want).max() <= 1e-3
