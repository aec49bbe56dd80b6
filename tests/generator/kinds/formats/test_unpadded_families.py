"""The unpadded encoder of every family equals the padded model of the same folder.

For each family's small model (`tests/model_folders.py`), built by the real spec, builders and
ragged formats: the `onnx_ragged` and `torchscript_ragged` embedding files and the
`onnx_ragged` sequence classifier (and its module traced to TorchScript) are fed as Triton
feeds ragged batches (the runners' batching core) with texts of 1 to 512 tokens, CJK and emoji,
one text per request, all in one request, and requests of 1 to 3 texts in a shuffled order; the
rows must equal the padded builder module's on the server's padded tokenization.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from generator.kinds.formats import unpadded_encoder as ragged
from generator.pipeline.artifacts import build_artifact, make_module, tokenize_like_server
from generator.pipeline.spec import Version
from tests import model_folders
from tests.generator.kinds.builders.test_families import spec, version_of
from tests.generator.pipeline.test_ragged import RAGGED_CONFIG, _batching

TEXTS = [
    "x",
    "光合作用是植物利用阳光制造食物的过程。",
    "Emoji 🙂 😂 👍🏽 and accents: café, naïve, Ångström, São Paulo.",
    "東京は日本の首都です。 Mixed scripts: hello 世界, привет мир.",
    model_folders.long_text(20),
    model_folders.long_text(45),
    model_folders.long_text(90),
    model_folders.long_text(200),
    model_folders.long_text(),  # truncated at 512 tokens
]
POOLINGS = ("cls", "max", "mean", "lasttoken", "weightedmean", "mean_sqrt_len_tokens")
"""Every pooling mode of the padded path (`builders.encoder.pool`)."""
Run = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


def token_ids(version: Version) -> tuple[list[list[int]], np.ndarray, np.ndarray]:
    """The texts' tokens as the server tokenizes them, plus the first 1, 40 and 100 tokens of the
    longest (every length bucket is used whatever the tokenizer); padded (ids, mask)."""
    ids, mask = tokenize_like_server(TEXTS, version.preprocessing)
    rows = [row[m == 1].tolist() for row, m in zip(ids, mask, strict=True)]
    longest = max(rows, key=len)
    rows += [longest[:1], longest[:40], longest[:100]]
    lengths = [len(row) for row in rows]
    buckets = {sum(n > bound for bound in ragged.DEFAULT_BUCKETS) for n in lengths}
    assert min(lengths) == 1 and max(lengths) == 512 and buckets == {0, 1, 2, 3}, lengths
    padded_ids = np.zeros((len(rows), 512), np.int64)
    padded_mask = np.zeros_like(padded_ids)
    for index, row in enumerate(rows):
        padded_ids[index, : len(row)], padded_mask[index, : len(row)] = row, 1
    return rows, padded_ids, padded_mask


def padded_outputs(version: Version, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    module = make_module(version.model.build, version.preprocessing)  # type: ignore[arg-type]
    with torch.no_grad():
        return np.asarray(module(torch.from_numpy(ids), torch.from_numpy(mask)).numpy())


def compositions(count: int) -> list[list[list[int]]]:
    """Request layouts (text indices per request): one text each, all in one, and 1, 2, 3, 1, ...
    texts per request in a shuffled order (long and short texts mixed)."""
    order = [int(i) for i in np.random.default_rng(5).permutation(count)]
    mixed, start, size = [], 0, 1
    while start < count:
        mixed.append(order[start : start + size])
        start, size = start + size, size % 3 + 1
    return [[[i] for i in range(count)], [list(range(count))], mixed]


def run_like_triton(run: Run, output: str, width: int, rows: list[list[int]]) -> list[np.ndarray]:
    """Each composition's rows (in text order) as the runners' batching core feeds the model."""
    config = _batching().BatchingConfig.from_model_config(
        {**RAGGED_CONFIG, "output": [{"name": output, "data_type": "TYPE_FP32", "dims": [width]}]}
    )
    answers = []
    for layout in compositions(len(rows)):
        requests = []
        for chunk in layout:
            packed, lengths = ragged.pack_request([rows[i] for i in chunk])
            requests.append({"input_ids": packed, "lengths": lengths})
        results = config.execute(requests, run)
        got = np.zeros((len(rows), width), np.float32)
        for chunk, result in zip(layout, results, strict=True):
            assert isinstance(result, list), result
            got[chunk] = result[0]
        answers.append(got)
    return answers


def onnx_run(path: Path, output: str) -> Run:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda feed: list(session.run([output], feed))


def torch_run(module: Any) -> Run:
    def run(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            return [module(*[torch.from_numpy(feed[name]) for name in ragged.INPUT_NAMES]).numpy()]

    return run


def cosines(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    return np.asarray((left * right).sum(1) / np.linalg.norm(left, axis=1) / np.linalg.norm(right, axis=1))


@pytest.mark.parametrize("family", model_folders.FAMILIES)
def test_embeddings_equal_the_padded_model(family: str, tmp_path: Path) -> None:
    folder = model_folders.cached_sentence_transformer(family)
    for model_format in ("onnx_ragged", "torchscript_ragged"):
        version = version_of(spec(folder, model_format=model_format, padding="none"))
        built = build_artifact(version.model, version.preprocessing, tmp_path, lambda _: None)
        rows, ids, mask = token_ids(version)
        want = padded_outputs(version, ids, mask)
        onnx = model_format == "onnx_ragged"
        run = onnx_run(built.path, "embedding") if onnx else torch_run(torch.jit.load(built.path))
        for got in run_like_triton(run, "embedding", 32, rows):
            assert cosines(got, want).min() >= 0.99999, (model_format, cosines(got, want))
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", model_folders.FAMILIES)
def test_classifier_logits_equal_the_padded_checkpoint(family: str, tmp_path: Path) -> None:
    version = version_of(
        spec(model_folders.cached_sequence_classifier(family), "classifier", "onnx_ragged", padding="none")
    )
    built = build_artifact(version.model, version.preprocessing, tmp_path, lambda _: None)
    rows, ids, mask = token_ids(version)
    want = padded_outputs(version, ids, mask)
    assert float(want.std(0).max()) > 0.05  # the logits differ between texts
    module = ragged.ragged_from_padded(make_module(version.model.build, version.preprocessing))  # type: ignore[arg-type]
    ragged.export_torchscript(module, tmp_path / "classifier.pt")
    runs = [onnx_run(built.path, "logits"), torch_run(torch.jit.load(tmp_path / "classifier.pt"))]
    for run in runs:
        for got in run_like_triton(run, "logits", len(model_folders.LABELS), rows):
            assert float(np.abs(got - want).max()) <= 1e-4


def test_every_pooling_dense_and_normalize_equal_the_padded_model(tmp_path: Path) -> None:
    """The pooling modes concatenated, a Dense layer and Normalize, in torch, ONNX and TorchScript;
    the exports are byte-identical when repeated."""
    folder = model_folders.cached_sentence_transformer("mpnet", pooling=POOLINGS, dense=(16,))
    data = spec(folder, model_format="onnx_ragged", padding="none")
    data["versions"][0]["outputs"]["embedding_dim"] = 16  # the Dense layer's width
    version = version_of(data)
    rows, ids, mask = token_ids(version)
    want = padded_outputs(version, ids, mask)
    module = ragged.ragged_from_padded(make_module(version.model.build, version.preprocessing))  # type: ignore[arg-type]
    ragged.export_onnx(module, tmp_path / "model.onnx")
    ragged.export_torchscript(module, tmp_path / "model.pt")
    runs = [torch_run(module), onnx_run(tmp_path / "model.onnx", "embedding")]
    runs.append(torch_run(torch.jit.load(tmp_path / "model.pt")))
    (tmp_path / "again").mkdir()
    ragged.export_onnx(module, tmp_path / "again" / "model.onnx")
    ragged.export_torchscript(module, tmp_path / "again" / "model.pt")
    for name in ("model.onnx", "model.pt"):
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / name).read_bytes(), name
    for run in runs:
        for got in run_like_triton(run, "embedding", 16, rows):
            assert cosines(got, want).min() >= 0.99999
            np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_int8_classifier_passes_the_fidelity_gate(tmp_path: Path) -> None:
    """`quantize: dynamic_int8` of a ragged RoBERTa classifier: built through the gate, smaller."""
    folder = model_folders.cached_sequence_classifier("roberta")
    version = version_of(spec(folder, "classifier", "onnx_ragged", quantize="dynamic_int8", padding="none"))
    messages: list[str] = []
    quantized = build_artifact(version.model, version.preprocessing, tmp_path, messages.append)
    assert any("fidelity gate passed" in message for message in messages), messages
    fp32 = build_artifact(version.model.model_copy(update={"quantize": None}), version.preprocessing, tmp_path)
    assert quantized.path.stat().st_size < fp32.path.stat().st_size
    rows, _, _ = token_ids(version)
    got, want = (run_like_triton(onnx_run(p, "logits"), "logits", 3, rows)[2] for p in (quantized.path, fp32.path))
    assert cosines(got, want).min() >= 0.97


def test_a_ragged_checkpoint_classifier_renders_a_config_its_file_passes(tmp_path: Path) -> None:
    """ELECTRA `transformers_classifier` in `onnx_ragged`: the rendered config passes the format's check."""
    import yaml
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from generator.kinds.formats import get_format
    from generator.pipeline.render import render_repository
    from generator.pipeline.spec import parse_spec
    from tests.generator.pipeline.planning import planned

    data = spec(model_folders.cached_sequence_classifier("electra"), "classifier", "onnx_ragged", padding="none")
    model_spec = parse_spec(yaml.safe_dump(data, allow_unicode=True), "models/family.yaml")
    version = model_spec.versions[0]
    built = build_artifact(version.model, version.preprocessing, tmp_path, lambda _: None)
    files = {f.path: f.text for f in render_repository(planned([model_spec]))}
    configs = [path for path in files if path.endswith("_model/config.pbtxt")]
    assert configs, sorted(files)
    for path in configs:
        config = text_format.Parse(files[path], mc.ModelConfig())
        assert [i.name for i in config.input] == ["input_ids", "lengths"]
        assert get_format("onnx_ragged").check(built.path, config) == []
