"""The client examples of README.md ("Calling a model") and docs/clients.md, run as written
against a real tritonserver serving minilm_embed and text_classifier (addresses substituted)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from generator.base.launch import ServerOptions, ServerPorts
from generator.pipeline.generate import GenerateOptions, generate
from generator.serving.ports import free_ports
from generator.serving.process import TritonProcess, start_ready_server

from .conftest import READY_TIMEOUT_S

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SPECS = ("minilm_embed", "text_classifier")


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
    repository = folder / "repository"
    generate(GenerateOptions(specs_dir=specs, output=repository, cores=2, channels=conda_channels))
    http, grpc, metrics = free_ports(3)
    process = start_ready_server(
        ServerOptions(repository=repository, ports=ServerPorts(http, grpc, metrics)), folder, READY_TIMEOUT_S
    )
    try:
        yield process
    finally:
        process.stop()


EXAMPLES = [("README.md", "Calling a model"), ("docs/clients.md", None)]


@pytest.mark.parametrize(("document", "section"), EXAMPLES)
def test_python_examples_print_the_embedding_shape(server: TritonProcess, document: str, section: str | None) -> None:
    examples = blocks(ROOT / document, "python", section)
    assert examples, f"no python example in {document}"
    for code in examples:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(addressed(code, server), document, "exec"), {"__name__": "__example__"})  # noqa: S102
        assert printed.getvalue().strip() == "(2, 384)", (document, code)


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
