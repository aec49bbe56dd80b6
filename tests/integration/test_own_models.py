"""A team's own model folders served as a user would: `tritongen add FOLDER`, `generate`, a real
tritonserver, HTTP and gRPC; the answers compared with the library on the same folder in fp32.

The folders are made here, offline (tests/model_folders.py, tests/finetuned_folders.py): a small
seeded model of each encoder family with a tokenizer trained by `tokenizers` (WordPiece, byte-level
BPE, Unigram), as a sequence classifier or a sentence-transformers folder, and a multi-label
fine-tune of the packaged MiniLM, and a BERT cross-encoder (`<name>` pairs and `<name>_rerank`),
added padded (`--padded`: onnx) and unpadded (the default: onnx_ragged; and as torchscript_ragged).
Each family's classifier and embedding is also served as its padded `onnx` twin, and each
embedding as a padded `torchscript` twin, all compared with the library.
The shipped single-label fine-tune (models/feedback_sentiment.yaml) and cross-encoder
(models/course_reranker.yaml), built by their recipes, are checked on the session's server.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml

from generator import PROJECT_ROOT
from generator.base.launch import ServerOptions, ServerPorts
from generator.cli import main as tritongen
from generator.pipeline.generate import GenerateOptions, generate
from generator.pipeline.spec import Quantize, load_spec
from generator.serving.ports import free_ports
from generator.serving.process import start_ready_server
from tests import finetuned_folders, model_folders

from . import assertions
from .assertions import SPECIAL_TEXTS, Target
from .conftest import FIXTURE_EXIT_TIMEOUT, READY_TIMEOUT_S

pytestmark = pytest.mark.integration
PROTOCOLS = ("http", "grpc")
CLASSIFIERS = {"roberta_topics": "roberta", "distilbert_topics": "distilbert"}
"""Spec name -> family of the seeded sequence classifiers."""
EMBEDDINGS = {
    "xlmr_embed": ("xlm-roberta", {"pooling": "mean"}),
    "electra_embed": ("electra", {"pooling": "cls", "normalize": False}),
    "mpnet_embed": ("mpnet", {"pooling": "mean", "dense": (24,)}),
}
"""Spec name -> (family, sentence-transformers options) of the seeded embedding folders."""
RERANKER = "pair_ranker"
"""A seeded BERT cross-encoder whose tokenizer gives token types (`model_folders.cross_encoder`)."""
RAGGED_RERANKER = "pair_ranker_ragged"
"""The same cross-encoder in a folder of its own, added with the default format (onnx_ragged)."""
TORCHSCRIPT_RERANKER = "pair_ranker_ts"
"""Its spec as `torchscript_ragged`."""
RERANKERS = (RERANKER, RAGGED_RERANKER, TORCHSCRIPT_RERANKER)
INT8_RERANKER = "pair_ranker_int8"
"""The unpadded reranker's dynamic_int8 copy, gated on pairs at generate time (default thresholds)."""
PADDED_TWINS = {f"{name}_padded": name for name in (*CLASSIFIERS, *EMBEDDINGS)}
"""Twin -> spec name: the same folder added again with `--padded` (format onnx)."""
TORCHSCRIPT_TWINS = {f"{name}_ts": name for name in EMBEDDINGS}
"""Twin -> spec name: the padded twin's spec as `torchscript` (a classifier cannot be TorchScript:
its LABEL is a string, docs/models.md)."""
TWINS = {**PADDED_TWINS, **TORCHSCRIPT_TWINS}
"""Every twin -> the spec name whose folder (and library reference) it shares."""
PADDED = {RERANKER, *PADDED_TWINS}
"""Added with `--padded` (format onnx); the others get the default unpadded format (onnx_ragged):
every family's classifier and embedding is served in both, and each embedding as TorchScript."""
MULTI_LABEL = "feedback_tags"
MULTI_LABEL_INT8 = "feedback_tags_int8"
INT8_GATE = {"min_cosine": 0.9, "min_mean_cosine": 0.97, "min_label_agreement": 0.9}
"""The int8 copy's gate: its 3 logits per text, near 0 for the labels a text does not have,
measure a min cosine to fp32 of about 0.96 (the default 0.97 refuses it, as it should)."""
TOKEN_COUNTS = (1, 7, 100, 300, 509, 510, 511, 512, 600)
"""Tokens of the generated texts without special tokens: short, around the 512 the test models
take (with their 2 special tokens) and beyond (truncated by server and reference alike)."""


def texts_for(folder: Path) -> list[str]:
    """Texts of TOKEN_COUNTS tokens for the folder's own tokenizer, then CJK, emoji, accents..."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    prose = model_folders.long_text(2000)
    offsets = tokenizer(prose, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return [prose[: offsets[count - 1][1]] for count in TOKEN_COUNTS] + list(SPECIAL_TEXTS.values())


@functools.cache
def reference_logits(folder: Path, max_length: int, texts: tuple[str, ...]) -> np.ndarray:
    """`AutoModelForSequenceClassification` logits of the folder, fp32, truncated at `max_length`."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    rows = []
    with torch.inference_mode():
        for text in texts:  # one at a time: no padding in the reference
            encoded = tokenizer([text], truncation=True, max_length=max_length, return_tensors="pt")
            rows.append(model(**encoded).logits[0].numpy())
    return np.stack(rows)


def check_classifier(target: Target, protocol: str, name: str, folder: Path, specs: Path) -> None:
    """LOGITS within 1e-4 of the library, PROBABILITIES its softmax, LABEL its argmax label."""
    version = load_spec(specs / f"{name}.yaml").versions[0]
    labels = list(version.outputs.labels or ())
    texts = texts_for(folder)
    got = assertions.infer_texts(target, protocol, name, texts, ["LOGITS", "PROBABILITIES", "LABEL"])
    want = reference_logits(folder, version.preprocessing.max_length, tuple(texts))
    assert np.abs(got["LOGITS"] - want).max() <= 1e-4, np.abs(got["LOGITS"] - want).max(axis=1)
    softmax = np.exp(want - want.max(axis=1, keepdims=True))
    softmax /= softmax.sum(axis=1, keepdims=True)
    assert np.abs(got["PROBABILITIES"] - softmax).max() <= 1e-4
    assert [label.decode() for label in got["LABEL"][:, 0]] == [labels[i] for i in want.argmax(axis=1)]


@pytest.fixture(scope="module")
def own_models(tmp_path_factory: pytest.TempPathFactory, conda_channels: list[str]) -> Iterator[dict[str, Any]]:
    """Model folders outside the project, each added with `tritongen add`, generated and served."""
    root = tmp_path_factory.mktemp("own-models")
    specs = root / "specs"
    folders: dict[str, Path] = {}
    for name, family in CLASSIFIERS.items():
        folders[name] = model_folders.sequence_classifier(family, root / "folders" / name)
    for name, (family, options) in EMBEDDINGS.items():
        folders[name] = model_folders.sentence_transformer(family, root / "folders" / name, **options)
    folders[MULTI_LABEL] = finetuned_folders.finetune_multi_label(root / "folders" / MULTI_LABEL)
    for name in (RERANKER, RAGGED_RERANKER):
        folders[name] = model_folders.cross_encoder("bert", root / "folders" / name, token_types=True)
    for twin, name in PADDED_TWINS.items():
        folders[twin] = folders[name]
    for name, folder in folders.items():
        padded = ["--padded"] if name in PADDED else []
        assert tritongen(["add", str(folder), "--name", name, "--specs", str(specs), *padded, "--no-int8-report"]) == 0
    formats = {name: load_spec(specs / f"{name}.yaml").versions[0].model.format for name in folders}
    assert formats == {name: "onnx" if name in PADDED else "onnx_ragged" for name in folders}
    # The int8 copy: the same folder and spec, quantized, gated at generate time.
    quantized = yaml.safe_load((specs / f"{MULTI_LABEL}.yaml").read_text(encoding="utf-8"))
    quantized["name"] = MULTI_LABEL_INT8
    quantized["versions"][0]["model"]["quantize"] = {"method": "dynamic_int8", **INT8_GATE}
    (specs / f"{MULTI_LABEL_INT8}.yaml").write_text(yaml.safe_dump(quantized), encoding="utf-8")
    int8_reranker = yaml.safe_load((specs / f"{RAGGED_RERANKER}.yaml").read_text(encoding="utf-8"))
    int8_reranker["name"] = INT8_RERANKER
    int8_reranker["versions"][0]["model"]["quantize"] = "dynamic_int8"  # the default gate
    (specs / f"{INT8_RERANKER}.yaml").write_text(yaml.safe_dump(int8_reranker), encoding="utf-8")
    folders[INT8_RERANKER] = folders[RAGGED_RERANKER]
    torchscript = yaml.safe_load((specs / f"{RAGGED_RERANKER}.yaml").read_text(encoding="utf-8"))
    torchscript["name"] = TORCHSCRIPT_RERANKER
    torchscript["versions"][0]["model"]["format"] = "torchscript_ragged"
    (specs / f"{TORCHSCRIPT_RERANKER}.yaml").write_text(yaml.safe_dump(torchscript), encoding="utf-8")
    folders[TORCHSCRIPT_RERANKER] = folders[RAGGED_RERANKER]
    for twin, name in TORCHSCRIPT_TWINS.items():
        padded = yaml.safe_load((specs / f"{name}_padded.yaml").read_text(encoding="utf-8"))
        padded["name"] = twin
        padded["versions"][0]["model"]["format"] = "torchscript"
        (specs / f"{twin}.yaml").write_text(yaml.safe_dump(padded), encoding="utf-8")
        folders[twin] = folders[name]
    repository = root / "repository"
    generate(GenerateOptions(specs_dir=specs, output=repository, cores=2, channels=conda_channels))
    http, grpc, metrics = free_ports(3)
    options = ServerOptions(
        repository=repository, ports=ServerPorts(http, grpc, metrics), extra_args=(FIXTURE_EXIT_TIMEOUT,)
    )
    process = start_ready_server(options, root / "server", READY_TIMEOUT_S)
    try:
        yield {"target": Target(process.http_url, process.grpc_url), "specs": specs, "folders": folders}
    finally:
        process.stop()
        shutil.rmtree(root / "folders", ignore_errors=True)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", [*sorted(CLASSIFIERS), *sorted(t for t, name in TWINS.items() if name in CLASSIFIERS)])
def test_family_classifier_equals_transformers(own_models: dict[str, Any], name: str, protocol: str) -> None:
    check_classifier(own_models["target"], protocol, name, own_models["folders"][name], own_models["specs"])


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", [*sorted(EMBEDDINGS), *sorted(t for t, name in TWINS.items() if name in EMBEDDINGS)])
def test_family_embedding_equals_sentence_transformers(own_models: dict[str, Any], name: str, protocol: str) -> None:
    from sentence_transformers import SentenceTransformer

    folder = own_models["folders"][name]
    texts = texts_for(folder)
    got = assertions.infer_texts(own_models["target"], protocol, name, texts, ["EMBEDDING"])["EMBEDDING"]
    want = SentenceTransformer(str(folder), device="cpu").encode(texts, batch_size=1)
    cosines = assertions.cosines(got, want)
    assert cosines.min() >= 0.9999, dict(zip(TOKEN_COUNTS, cosines, strict=False))
    if not EMBEDDINGS[TWINS.get(name, name)][1].get("normalize", True):  # not unit length: the vectors themselves
        assert np.allclose(np.linalg.norm(got, axis=1), np.linalg.norm(want, axis=1), rtol=1e-3)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_multi_label_classifier_equals_transformers(own_models: dict[str, Any], protocol: str) -> None:
    folder = own_models["folders"][MULTI_LABEL]
    version = load_spec(own_models["specs"] / f"{MULTI_LABEL}.yaml").versions[0]
    labels = list(version.outputs.labels or ())
    texts = [text for text, _ in finetuned_folders.MULTI_LABEL_EXAMPLES] + list(SPECIAL_TEXTS.values())
    got = assertions.infer_texts(
        own_models["target"], protocol, MULTI_LABEL, texts, ["LOGITS", "PROBABILITIES", "LABELS"]
    )
    want = reference_logits(folder, version.preprocessing.max_length, tuple(texts))
    assert np.abs(got["LOGITS"] - want).max() <= 1e-4
    sigmoid = 1 / (1 + np.exp(-want))
    assert np.abs(got["PROBABILITIES"] - sigmoid).max() <= 1e-4
    assert got["LABELS"].shape == (len(texts), len(labels))
    for row, probabilities in zip(got["LABELS"], sigmoid, strict=True):
        assert [label.decode() for label in row] == [
            label if p > 0.5 else "" for label, p in zip(labels, probabilities, strict=True)
        ]


def test_multi_label_int8_within_its_gate(own_models: dict[str, Any]) -> None:
    texts = [text for text, _ in finetuned_folders.MULTI_LABEL_EXAMPLES]
    target = own_models["target"]
    fp32 = assertions.infer_texts(target, "http", MULTI_LABEL, texts, ["LOGITS", "LABELS"])
    int8 = assertions.infer_texts(target, "grpc", MULTI_LABEL_INT8, texts, ["LOGITS", "LABELS"])
    cosines = assertions.cosines(int8["LOGITS"], fp32["LOGITS"])
    assert cosines.min() >= INT8_GATE["min_cosine"] and cosines.mean() >= INT8_GATE["min_mean_cosine"], cosines
    agreement = np.mean([list(a) == list(b) for a, b in zip(int8["LABELS"], fp32["LABELS"], strict=True)])
    assert agreement >= INT8_GATE["min_label_agreement"], agreement
    print(
        f"int8 vs fp32 served: logits cosine min {cosines.min():.4f} mean {cosines.mean():.4f}, labels {agreement:.3f}"
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_shipped_fine_tuned_classifier_equals_transformers(server: Target, protocol: str) -> None:
    spec = load_spec(PROJECT_ROOT / "models" / "feedback_sentiment.yaml")
    from generator.base.sources import resolve_source

    folder = resolve_source(spec.versions[0].model.build.source)
    check_classifier(server, protocol, "feedback_sentiment", folder, PROJECT_ROOT / "models")


# --- rerankers ------------------------------------------------------------------------------


def pair_inputs(protocol: str, query: Any, text: Any) -> list[Any]:
    """QUERY and TEXT BYTES tensors of any shape (None: left out)."""
    module = httpclient if protocol == "http" else grpcclient
    tensors = []
    for name, values in (("QUERY", query), ("TEXT", text)):
        if values is not None:
            data = np.array(values, dtype=object)
            tensor = module.InferInput(name, list(data.shape), "BYTES")
            tensor.set_data_from_numpy(data)
            tensors.append(tensor)
    return tensors


def score_pairs(target: Target, protocol: str, name: str, pairs: list[tuple[str, str]]) -> np.ndarray:
    """`<name>`'s SCORE of each pair, sent as QUERY and TEXT [n, 1]."""
    queries = [[query.encode()] for query, _ in pairs]
    texts = [[text.encode()] for _, text in pairs]
    result = assertions.client(target, protocol).infer(name, pair_inputs(protocol, queries, texts))
    return result.as_numpy("SCORE")[:, 0]


def rerank(target: Target, protocol: str, name: str, query: str, texts: list[str]) -> np.ndarray:
    """`<name>_rerank`'s SCORES of one query and n texts (QUERY [1], TEXT [n])."""
    inputs = pair_inputs(protocol, [query.encode()], [text.encode() for text in texts])
    scores = assertions.client(target, protocol).infer(f"{name}_rerank", inputs).as_numpy("SCORES")
    assert scores.shape == (len(texts), 1)
    return scores[:, 0]


def check_reranker(target: Target, protocol: str, name: str, folder: Path, query: str, texts: list[str]) -> None:
    """`<name>` and `<name>_rerank` within 1e-4 of `CrossEncoder.predict`, in the same order."""
    from sentence_transformers import CrossEncoder

    want = CrossEncoder(str(folder), device="cpu").predict([(query, text) for text in texts], batch_size=1)
    for got in (
        score_pairs(target, protocol, name, [(query, text) for text in texts]),
        rerank(target, protocol, name, query, texts),
    ):
        assert np.abs(got - want).max() <= 1e-4, np.abs(got - want)
        assert list(np.argsort(-got, kind="stable")) == list(np.argsort(-want, kind="stable"))


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", RERANKERS)
def test_reranker_equals_cross_encoder(own_models: dict[str, Any], name: str, protocol: str) -> None:
    folder = own_models["folders"][name]
    texts = texts_for(folder)  # 1 to 600 tokens (truncated longest-first with the query), CJK, emoji...
    for query in ("what is a cell", SPECIAL_TEXTS["cjk"], texts[3]):  # short, CJK, 300 tokens
        check_reranker(own_models["target"], protocol, name, folder, query, texts)


def test_int8_reranker_within_its_gate(own_models: dict[str, Any]) -> None:
    """The int8 copy's served scores against `CrossEncoder.predict` (fp32) on texts of 1 to 600
    tokens and CJK, over both protocols: within the gate's default score difference and order agreement."""
    from sentence_transformers import CrossEncoder

    settings = Quantize(method="dynamic_int8")
    folder = own_models["folders"][INT8_RERANKER]
    texts = texts_for(folder)
    model = CrossEncoder(str(folder), device="cpu")
    for protocol, query in zip(PROTOCOLS, ("what is a cell", SPECIAL_TEXTS["cjk"]), strict=True):
        want = model.predict([(query, text) for text in texts], batch_size=1)
        got = rerank(own_models["target"], protocol, INT8_RERANKER, query, texts)
        difference = np.abs(got - want).max()
        i, j = np.triu_indices(len(texts), k=1)
        untied = want[i] != want[j]
        agreement = np.mean(np.sign(got[i] - got[j])[untied] == np.sign(want[i] - want[j])[untied])
        print(
            f"int8 reranker vs CrossEncoder ({protocol}): max score difference {difference:.4f}, order {agreement:.3f}"
        )
        assert 0 < difference <= settings.max_score_difference
        assert agreement >= settings.min_order_agreement


RERANK_BAD = {
    "pair without QUERY": ("", None, [[b"a text"]], ("QUERY",)),
    "empty text in a pair": ("", [[b"q"], [b"q"]], [[b"a"], [b""]], ("TEXT[1] is empty",)),
    "empty query in a pair": ("", [[b""]], [[b"a"]], ("QUERY[0] is empty",)),
    "rerank without QUERY": ("_rerank", None, [b"a"], ("QUERY",)),
    "rerank empty text": ("_rerank", [b"q"], [b"a", b"b", b""], ("TEXT[2] is empty",)),
    "rerank over the limit": ("_rerank", [b"q"], [b"t"] * 65, ("65 texts", "limit of 64")),
}
"""Case -> (entry point after the spec name, QUERY, TEXT, substrings the error names)."""


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", RERANKERS)
def test_reranker_bad_requests_are_client_errors(own_models: dict[str, Any], name: str, protocol: str) -> None:
    target = own_models["target"]
    before = rerank(target, protocol, name, "what is a cell", ["a cell", "a rock"])
    for label, (entry, query, text, keywords) in RERANK_BAD.items():
        inputs = pair_inputs(protocol, query, text)
        send = functools.partial(assertions.client(target, protocol).infer, f"{name}{entry}", inputs)
        message = assertions.rejection(label, protocol, send)
        assert all(keyword in message for keyword in keywords), f"{label}: {message!r}"
        assert assertions.client(target, protocol).is_model_ready(f"{name}{entry}")
    after = rerank(target, protocol, name, "what is a cell", ["a cell", "a rock"])
    assert np.allclose(before, after, atol=1e-6)


def test_ragged_reranker_batches_pairs_and_rerank_requests_of_any_length(own_models: dict[str, Any]) -> None:
    """Concurrent pair and rerank requests over HTTP and gRPC, of different lengths and sizes, run
    together in fewer executions of the ragged model, each answered as `CrossEncoder.predict`."""
    import concurrent.futures
    import threading

    from sentence_transformers import CrossEncoder

    target = own_models["target"]
    folder = own_models["folders"][RAGGED_RERANKER]
    model = f"{RAGGED_RERANKER}_v1_model"
    texts = texts_for(folder)
    queries = ["what is a cell", SPECIAL_TEXTS["cjk"], texts[2]]  # short, CJK, 100 tokens
    # Request i: (protocol, rerank or pairs, query, its texts): 1 to 4 texts of 1 to 600 tokens.
    requests = [
        (PROTOCOLS[i % 2], i % 3 == 0, queries[i % 3], [texts[(i + j) % len(texts)] for j in range(1 + i % 4)])
        for i in range(12)
    ]
    reference = CrossEncoder(str(folder), device="cpu")
    want = [reference.predict([(query, text) for text in batch], batch_size=1) for _, _, query, batch in requests]
    start = threading.Barrier(len(requests))

    def send(index: int) -> np.ndarray:
        protocol, whole, query, batch = requests[index]
        client = assertions.client(target, protocol)  # one per thread
        if whole:
            inputs = pair_inputs(protocol, [query.encode()], [text.encode() for text in batch])
            start.wait(timeout=60)
            return client.infer(f"{RAGGED_RERANKER}_rerank", inputs).as_numpy("SCORES")[:, 0]
        inputs = pair_inputs(protocol, [[query.encode()]] * len(batch), [[text.encode()] for text in batch])
        start.wait(timeout=60)
        return client.infer(RAGGED_RERANKER, inputs).as_numpy("SCORE")[:, 0]

    statistics = assertions.client(target, "http")
    for _attempt in range(3):
        stats = statistics.get_inference_statistics(model)["model_stats"][0]
        before = (int(stats["execution_count"]), int(stats["inference_count"]))
        with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
            results = list(pool.map(send, range(len(requests))))
        stats = statistics.get_inference_statistics(model)["model_stats"][0]
        executions = int(stats["execution_count"]) - before[0]
        assert int(stats["inference_count"]) - before[1] == sum(len(batch) for *_, batch in requests)
        for got, expected in zip(results, want, strict=True):
            assert np.abs(got - expected).max() <= 1e-4, np.abs(got - expected)
        if executions < len(requests):
            return
    raise AssertionError(f"{len(requests)} concurrent requests always ran one per execution")


def test_rerank_requests_are_batched_by_the_inference_model(own_models: dict[str, Any]) -> None:
    """Concurrent rerank requests of equal shapes run in fewer executions of the inference model."""
    import concurrent.futures
    import threading

    target = own_models["target"]
    model = f"{RERANKER}_v1_model"
    texts = ["a cell is small", "rocks are hard", "water boils"]
    count = 8
    start = threading.Barrier(count)
    clients = [assertions.client(target, "http") for _ in range(count)]  # one per thread (gevent)
    statistics = assertions.client(target, "http")

    def send(index: int) -> np.ndarray:
        inputs = pair_inputs("http", [b"what is a cell"], [text.encode() for text in texts])
        start.wait(timeout=60)
        return clients[index].infer(f"{RERANKER}_rerank", inputs).as_numpy("SCORES")

    for _attempt in range(3):
        stats = statistics.get_inference_statistics(model)["model_stats"][0]
        before = (int(stats["execution_count"]), int(stats["inference_count"]))
        with concurrent.futures.ThreadPoolExecutor(count) as pool:
            results = list(pool.map(send, range(count)))
        stats = statistics.get_inference_statistics(model)["model_stats"][0]
        executions = int(stats["execution_count"]) - before[0]
        assert int(stats["inference_count"]) - before[1] == count * len(texts)
        assert all(np.allclose(result, results[0], atol=1e-6) for result in results)
        if executions < count:
            return
    raise AssertionError(f"{count} concurrent rerank requests always ran one per execution")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_shipped_reranker_equals_cross_encoder(server: Target, protocol: str) -> None:
    from generator.base.sources import resolve_source

    spec = load_spec(PROJECT_ROOT / "models" / "course_reranker.yaml")
    folder = resolve_source(spec.versions[0].model.build.source)
    passages = [
        "Photosynthesis is how green plants make their food from sunlight, water and carbon dioxide.",
        "The French Revolution began in 1789.",
        "植物は光合成で栄養を作ります。",
        "Volcanoes form where magma rises through the crust. " * 60,  # over 512 tokens with the query
    ]
    check_reranker(server, protocol, "course_reranker", folder, "How do plants make their own food?", passages)
