"""The client examples of README.md ("Calling a model", "Reranking", the admin API call) and
docs/clients.md, run as written against a real tritonserver serving minilm_embed,
text_classifier, course_reranker, feedback_sentiment (both built by their recipes, cached in
build/recipes) and a multi-label `feedback_tags` (a tiny seeded checkpoint,
`tests/classifier_checkpoints.py`) with restricted admin APIs, as `tritongen serve` starts it
(addresses substituted)."""

from __future__ import annotations

import ast
import contextlib
import http.client
import io
import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from generator.base.launch import ServerOptions, ServerPorts
from generator.pipeline.generate import GenerateOptions, generate
from generator.pipeline.spec import load_spec
from generator.serving.ports import free_ports
from generator.serving.process import TritonProcess, start_ready_server
from generator.serving.update import state_dir
from tests.classifier_checkpoints import TOKENIZER, tiny_classifier

from .conftest import FIXTURE_EXIT_TIMEOUT, READY_TIMEOUT_S

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SPECS = ("minilm_embed", "text_classifier", "course_reranker", "feedback_sentiment")
ADMIN_KEY = "client-examples-admin-key"
CLASSIFIERS = "Classifiers"
"""The section of docs/clients.md whose examples call the classifiers."""
RERANKERS = (("README.md", "Reranking"), ("docs/clients.md", "Rerankers"))
"""The sections whose examples rank passages with course_reranker."""
TAGS = ("question", "complaint", "praise")
"""`feedback_tags`' labels, as docs/clients.md names them."""


def feedback_tags_spec(checkpoint: Path) -> str:
    """The multi-label classifier of docs/clients.md (padded preprocessing, as `format: onnx` needs)."""
    return f"""
name: feedback_tags
kind: multi_label_classifier
default_version: 1
versions:
  - version: 1
    preprocessing:
      package_version: "1.0.0"
      environment: textprep-tok023
      tokenizer: {{package: {TOKENIZER[0]}, path: {TOKENIZER[1]}}}
      max_length: 256
    model:
      format: onnx
      build: {{builder: transformers_classifier, source: {{folder: {checkpoint}}}}}
    outputs: {{labels: [{", ".join(TAGS)}]}}
"""


def blocks(path: Path, language: str, section: str | None = None) -> list[str]:
    """The fenced `language` code blocks of a markdown file (of one `## section` only, if named)."""
    text = path.read_text(encoding="utf-8")
    if section is not None:
        text = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def addressed(code: str, server: TritonProcess) -> str:
    return code.replace("localhost:8000", server.http_url).replace("localhost:8001", server.grpc_url)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, conda_channels: list[str]) -> Iterator[TritonProcess]:
    folder = tmp_path_factory.mktemp("clients")
    specs = folder / "specs"
    specs.mkdir()
    for name in SPECS:
        shutil.copy(ROOT / "models" / f"{name}.yaml", specs / f"{name}.yaml")
    checkpoint = tiny_classifier(folder / "feedback-tags", TAGS, multi_label=True)
    (specs / "feedback_tags.yaml").write_text(feedback_tags_spec(checkpoint))
    repository = folder / "repository"
    generate(GenerateOptions(specs_dir=specs, output=repository, cores=2, channels=conda_channels))
    http, grpc, metrics = free_ports(3)
    process = start_ready_server(
        ServerOptions(
            repository=repository,
            ports=ServerPorts(http, grpc, metrics),
            admin_key=ADMIN_KEY,
            extra_args=(FIXTURE_EXIT_TIMEOUT,),
        ),
        folder,
        READY_TIMEOUT_S,
    )
    try:
        yield process
    finally:
        process.stop()


EXAMPLES = [("README.md", "Calling a model"), ("README.md", "Reranking"), ("docs/clients.md", None)]


@pytest.mark.parametrize(("document", "section"), EXAMPLES)
def test_python_examples_print_the_embedding_shape(server: TritonProcess, document: str, section: str | None) -> None:
    if (document, section) in RERANKERS:
        return  # test_reranker_examples_rank_the_passage_first
    examples = blocks(ROOT / document, "python", section)
    if document == "docs/clients.md":
        others = blocks(ROOT / document, "python", CLASSIFIERS) + blocks(ROOT / document, "python", RERANKERS[1][1])
        examples = [code for code in examples if code not in others]
    assert examples, f"no python example in {document}"
    for code in examples:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(addressed(code, server), document, "exec"), {"__name__": "__example__"})  # noqa: S102
        assert printed.getvalue().strip() == "(2, 384)", (document, code)


def test_classifier_examples_print_labels(server: TritonProcess) -> None:
    """docs/clients.md's classifier examples: text_classifier's labels as the comment says, and
    each text's multi-label tags (a random checkpoint's: any of its labels)."""
    single, multi, _sentiment = blocks(ROOT / "docs/clients.md", "python", CLASSIFIERS)
    printed = []
    for code in (single, multi):
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            exec(compile(addressed(code, server), "docs/clients.md", "exec"), {"__name__": "__example__"})  # noqa: S102
        printed.append(output.getvalue().strip())
    assert printed[0] == single.rsplit("# ", 1)[1].strip(), printed[0]
    tags = ast.literal_eval(printed[1])
    assert len(tags) == 2 and all(set(row) <= set(TAGS) and len(row) == len(set(row)) for row in tags), tags


def test_fine_tuned_classifier_example_prints_the_label(server: TritonProcess) -> None:
    """docs/clients.md's feedback_sentiment example prints the label its comment names for its
    clearly positive text, then the 3 probabilities (rounded), highest for that label; with a
    clearly negative text instead, `negative`."""
    *_, code = blocks(ROOT / "docs/clients.md", "python", CLASSIFIERS)
    (text,) = re.findall(r'\[\[b"(.+?)"\]\]', code)
    labels = list(load_spec(ROOT / "models" / "feedback_sentiment.yaml").versions[0].outputs.labels or ())
    commented = code.rsplit("# ", 1)[1].split()[0]
    assert commented == "positive", commented
    negative = "The lecture was boring and confusing, I learned nothing."
    for sent, want in ((text, commented), (negative, "negative")):
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            example = addressed(code.replace(text, sent), server)
            exec(compile(example, "docs/clients.md", "exec"), {"__name__": "__example__"})  # noqa: S102
        label, printed = output.getvalue().strip().split(" ", 1)
        probabilities = [float(p) for p in printed.strip("[]").split()]
        assert label == want, (sent, output.getvalue())
        assert len(probabilities) == len(labels) and abs(sum(probabilities) - 1) <= 0.02, probabilities
        assert labels[int(np.argmax(probabilities))] == label, (labels, probabilities)


@pytest.mark.parametrize(("document", "section"), RERANKERS)
def test_reranker_examples_rank_the_passage_first(server: TritonProcess, document: str, section: str) -> None:
    (code,) = blocks(ROOT / document, "python", section)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(addressed(code, server), document, "exec"), {"__name__": "__example__"})  # noqa: S102
    assert printed.getvalue().startswith("Photosynthesis turns sunlight"), printed.getvalue()


@pytest.mark.parametrize(("document", "section"), EXAMPLES)
def test_curl_examples_answer(server: TritonProcess, tmp_path: Path, document: str, section: str | None) -> None:
    for code in blocks(ROOT / document, "bash", section):
        if "curl" not in code:
            continue
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", addressed(code, server)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ},
        )
        assert done.returncode == 0, (document, code, done.stderr)
        if "-o answer.bin" in code:  # the binary answer: JSON header, then 384 floats
            length = re.search(r"Inference-Header-Content-Length: (\d+)", (tmp_path / "headers.txt").read_text(), re.I)
            assert length is not None
            answer = (tmp_path / "answer.bin").read_bytes()
            output = json.loads(answer[: int(length.group(1))])["outputs"][0]
            floats = np.frombuffer(answer[int(length.group(1)) :], dtype="<f4")
            assert output["name"] == "EMBEDDING" and floats.shape == (384,)
            assert abs(float(np.linalg.norm(floats)) - 1.0) < 1e-4
            continue
        decoder, text, answers = json.JSONDecoder(), done.stdout.strip(), []
        while text:
            answer, end = decoder.raw_decode(text)
            answers.append(answer)
            text = text[end:].strip()
        assert answers and all("outputs" in a for a in answers), done.stdout[:500]


def test_admin_example_lists_the_repository_with_the_key(server: TritonProcess, tmp_path: Path) -> None:
    """README's admin API call, run from a checkout whose `serve` wrote its key where `serve` does."""
    section = "The admin APIs need a key"
    (code,) = [c for c in blocks(ROOT / "README.md", "bash", section) if "curl" in c]
    key_file = tmp_path / state_dir("localhost:8000").relative_to(ROOT) / "admin-key"
    key_file.parent.mkdir(parents=True)
    key_file.write_text(ADMIN_KEY + "\n")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", addressed(code, server)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, (code, done.stderr)
    states = {entry["name"]: entry.get("state") for entry in json.loads(done.stdout)}
    assert states["minilm_embed"] == states["text_classifier"] == "READY", states
    request = urllib.request.Request(f"http://{server.http_url}/v2/repository/index", data=b"", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 403 and "restricted" in refused.value.read().decode()


def test_stop_says_it_waits_for_an_open_connection(server: TritonProcess) -> None:
    """Runs last: it stops the module's server. An idle keep-alive HTTP connection holds
    tritonserver's shutdown until it closes (docs/facts.md, "Stopping"): `stop` says so, and once
    the client closes it the server unloads every model and exits cleanly (exit code 0, not the
    1 of an expired exit timeout)."""
    host, port = server.http_url.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("GET", "/v2/health/live")
    assert connection.getresponse().read() == b""
    said: list[str] = []

    def progress(line: str) -> None:
        said.append(line)
        connection.close()  # what the message asks the user to do

    assert server.stop(progress=progress) == 0
    assert len(said) == 1 and "open HTTP connection(s)" in said[0], said
