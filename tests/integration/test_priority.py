"""The bulk entry point's priority on the real tritonserver: how a request's priority reaches
the composing models of an ensemble (`<name>_batch` shares `<name>`'s models)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from generator.base.launch import ServerOptions, ServerPorts
from generator.pipeline.generate import GenerateOptions, generate
from generator.pipeline.manifest import Manifest, read_manifest
from generator.pipeline.plan import BULK_PRIORITY, ONLINE_PRIORITY
from generator.serving.ports import free_ports
from generator.serving.process import TritonProcess, start_ready_server

from .conftest import FIXTURE_EXIT_TIMEOUT, READY_TIMEOUT_S

SPEC = Path(__file__).resolve().parents[2] / "models" / "minilm_embed.yaml"


@pytest.fixture(scope="module")
def verbose_server(tmp_path_factory: pytest.TempPathFactory, conda_channels: list[str]) -> Iterator[TritonProcess]:
    """One spec generated and served with `--log-verbose=1` (Triton logs every prepared request)."""
    specs = tmp_path_factory.mktemp("specs")
    shutil.copy(SPEC, specs / SPEC.name)
    output = tmp_path_factory.mktemp("priority") / "repository"
    generate(GenerateOptions(specs_dir=specs, output=output, cores=2, channels=conda_channels, progress=lambda _: None))
    http, grpc, metrics = free_ports(3)
    options = ServerOptions(
        repository=output,
        ports=ServerPorts(http, grpc, metrics),
        log_verbose=1,
        extra_args=(FIXTURE_EXIT_TIMEOUT,),
    )
    process = start_ready_server(options, tmp_path_factory.mktemp("server"), READY_TIMEOUT_S)
    try:
        yield process
    finally:
        process.stop()


def priorities(log: str, request_id: str) -> dict[str, int]:
    """model -> priority of every request Triton prepared with this id (ensemble and its steps)."""
    found = re.findall(rf"prepared: \[0x[0-9a-fx]+\] request id: {request_id}, model: (\S+),.*?priority: (\d+)", log)
    return {model: int(priority) for model, priority in found}


def send(server: TritonProcess, protocol: str, model: str, request_id: str, priority: int) -> None:
    texts = np.array([[b"How do plants make food?"]], dtype=object)
    if protocol == "grpc":
        client: grpcclient.InferenceServerClient | httpclient.InferenceServerClient = grpcclient.InferenceServerClient(
            server.grpc_url
        )
        tensor = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
    else:
        client = httpclient.InferenceServerClient(server.http_url)
        tensor = httpclient.InferInput("TEXT", [1, 1], "BYTES")  # type: ignore[assignment]
    tensor.set_data_from_numpy(texts)
    result = client.infer(model, [tensor], request_id=request_id, priority=priority)  # type: ignore[arg-type]
    assert result.as_numpy("EMBEDDING").shape == (1, 384)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_the_request_priority_reaches_every_composing_model(verbose_server: TritonProcess, protocol: str) -> None:
    manifest: Manifest = read_manifest(verbose_server.options.repository)
    bulk = manifest.models["minilm_embed_batch"]
    assert bulk.priority == BULK_PRIORITY and manifest.models["minilm_embed"].priority == ONLINE_PRIORITY
    steps = set(bulk.depends_on)
    assert steps == set(manifest.models["minilm_embed"].depends_on)  # the same models, one copy
    send(verbose_server, protocol, "minilm_embed_batch", f"bulk-{protocol}", BULK_PRIORITY)
    send(verbose_server, protocol, "minilm_embed", f"online-{protocol}", 0)
    send(verbose_server, protocol, "minilm_embed_batch", f"unmarked-{protocol}", 0)
    log = verbose_server.log_text()
    # The ensemble passes any level on; the inference step gets the request's priority, the
    # preprocessing step (one FIFO queue, no levels) its default level, 0.
    inference = {step for step in steps if manifest.models[step].role == "inference"}
    assert len(inference) == 1 and len(steps - inference) == 1
    assert priorities(log, f"bulk-{protocol}") == {"minilm_embed_batch": BULK_PRIORITY} | dict.fromkeys(
        inference, BULK_PRIORITY
    ) | dict.fromkeys(steps - inference, 0)
    # No priority: the composing models' default level (online), whatever the entry point:
    # the bulk ensemble cannot set its clients' priority (an ensemble step has no such field).
    for request_id in (f"online-{protocol}", f"unmarked-{protocol}"):
        seen = priorities(log, request_id)
        assert {seen[step] for step in inference} == {ONLINE_PRIORITY}, seen
        assert {seen[step] for step in steps - inference} == {0}, seen
