"""The ragged formats' exporters: the shipped ragged classifier (text_classifier v2) as
`onnx_ragged` has the ragged graph contract and the padded classifier's numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from generator.kinds.formats import get_format
from generator.kinds.formats import unpadded_encoder as ragged
from generator.pipeline.artifacts import BuiltArtifact, build_artifact, make_module, tokenize_like_server
from generator.pipeline.spec import Version, load_specs
from tests.generator.pipeline.test_ragged import _batching, texts_of_many_lengths

PROJECT = Path(__file__).resolve().parents[4]
CLASSIFIER = {s.name: s for s in load_specs(PROJECT / "models")}["text_classifier"]
QUESTIONS = [
    "Calculate the square root of 144.",
    "What gas do plants absorb from the air?",
    "In which year did the Berlin Wall fall?",
    "Which word in this sentence is a noun?",
]


def long_version() -> Version:
    """Version 2 (ragged) with the model's own 256 tokens instead of its lowered 32."""
    version = CLASSIFIER.version(2)
    return version.model_copy(update={"preprocessing": version.preprocessing.model_copy(update={"max_length": 256})})


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuiltArtifact:
    version = long_version()
    assert version.model.format == "onnx_ragged"
    return build_artifact(version.model, version.preprocessing, tmp_path_factory.mktemp("artifacts"), lambda _: None)


def test_the_graph_takes_flat_tensors_and_the_format_s_batch_inputs(built: BuiltArtifact) -> None:
    import onnx

    kind = get_format("onnx_ragged")
    graph = onnx.load(str(built.path)).graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    declared = [(t.name, t.data_type) for t in kind.inputs("classifier")]
    declared += [(b.target, b.data_type) for b in kind.batch_inputs()]
    onnx_types = {onnx.TensorProto.INT64: "TYPE_INT64", onnx.TensorProto.INT32: "TYPE_INT32"}
    assert [(i.name, onnx_types[i.type.tensor_type.elem_type]) for i in inputs] == declared
    assert [i.name for i in inputs] == list(ragged.INPUT_NAMES)
    for tensor in inputs:  # exactly [-1]: what Triton requires of ragged and batch inputs
        dims = tensor.type.tensor_type.shape.dim
        assert len(dims) == 1 and not dims[0].HasField("dim_value"), tensor.name
    assert all(t.ragged for t in kind.inputs("classifier"))
    assert {b.source for b in kind.batch_inputs()} == {t.name for t in kind.inputs("classifier")}
    outputs = {o.name: o.type.tensor_type for o in graph.output}
    assert list(outputs) == list(kind.tensor_names("classifier")[1]) == ["logits", "probabilities", "label"]
    shapes = {n: [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim] for n, t in outputs.items()}
    assert shapes == {"logits": [-1, 4], "probabilities": [-1, 4], "label": [-1, 1]}
    assert outputs["logits"].elem_type == outputs["probabilities"].elem_type == onnx.TensorProto.FLOAT
    assert outputs["label"].elem_type == onnx.TensorProto.STRING


def test_the_rendered_config_passes_the_format_s_check(built: BuiltArtifact) -> None:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from generator.pipeline.render import render_repository
    from tests.generator.pipeline.planning import planned

    files = {f.path: f.text for f in render_repository(planned([CLASSIFIER]))}
    for name in ("text_classifier_v2_model",):  # `text_classifier_batch` runs the same model
        config = text_format.Parse(files[f"{name}/config.pbtxt"], mc.ModelConfig())
        assert get_format("onnx_ragged").check(built.path, config) == []


def _padded_logits(version: Version, texts: list[str]) -> np.ndarray:
    """The padded classifier (the same builder module, prototypes and tokenization)."""
    module = make_module(version.model.build, version.preprocessing)  # type: ignore[arg-type]
    ids, mask = tokenize_like_server(texts, version.preprocessing)
    with torch.no_grad():
        return np.asarray(module(torch.from_numpy(ids), torch.from_numpy(mask)).numpy())


def test_logits_and_labels_equal_the_padded_classifier_for_1_to_256_tokens(built: BuiltArtifact) -> None:
    import onnxruntime as ort

    version = long_version()
    texts = [*QUESTIONS, *texts_of_many_lengths()]
    ids, mask = tokenize_like_server(texts, version.preprocessing)
    token_ids = [row[m == 1].tolist() for row, m in zip(ids, mask, strict=True)]
    assert min(map(len, token_ids)) == 3 and max(map(len, token_ids)) == 256
    # Requests of 1, 2, 3, 1, ... texts in an order that mixes short and long ones, fed as Triton does.
    order = list(np.random.default_rng(3).permutation(len(texts)))
    requests, start, size = [], 0, 1
    while start < len(order):
        chunk = order[start : start + size]
        packed, lengths = ragged.pack_request([token_ids[i] for i in chunk])
        requests.append((chunk, {"input_ids": packed, "lengths": lengths}))
        start, size = start + size, size % 3 + 1
    session = ort.InferenceSession(str(built.path), providers=["CPUExecutionProvider"])
    config = _batching().BatchingConfig.from_model_config(classifier_config())
    outputs = ["logits", "probabilities", "label"]
    results = config.execute([r for _, r in requests], lambda feed: session.run(outputs, feed))
    logits = np.zeros((len(texts), 4), np.float32)
    probabilities = np.zeros((len(texts), 4), np.float32)
    labels: list[Any] = [None] * len(texts)
    for (chunk, _), result in zip(requests, results, strict=True):
        assert isinstance(result, list), result
        logits[chunk], probabilities[chunk] = result[0], result[1]
        for index, label in zip(chunk, result[2][:, 0], strict=True):
            labels[index] = str(label)
    padded = _padded_logits(version, texts)
    difference = float(np.abs(logits - padded).max())
    print(f"max |logit difference| ragged vs padded over {len(texts)} texts: {difference:.2e}")
    assert difference <= 1e-4 and float(np.abs(padded).max()) > 5
    softmax = np.exp(padded - padded.max(1, keepdims=True))
    assert np.abs(probabilities - softmax / softmax.sum(1, keepdims=True)).max() <= 1e-5
    names = list(version.outputs.labels or ())
    assert labels == [names[i] for i in padded.argmax(1)]
    assert {labels[i] for i in range(len(QUESTIONS))} == {"math", "science", "history", "language"}


def classifier_config() -> dict[str, Any]:
    """The ragged classifier's config as the runners read it (what `render` writes for v2)."""
    from tests.generator.pipeline.test_ragged import RAGGED_CONFIG

    return {
        **RAGGED_CONFIG,
        "output": [
            {"name": "logits", "data_type": "TYPE_FP32", "dims": [4]},
            {"name": "probabilities", "data_type": "TYPE_FP32", "dims": [4]},
            {"name": "label", "data_type": "TYPE_STRING", "dims": [1]},
        ],
    }
