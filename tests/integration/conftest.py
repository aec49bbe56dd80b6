"""Fixtures: a repository generated from models/ into a temp folder, served by a real tritonserver."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from generator.environments import channel as conda_channel
from generator.environments.build import CHANNELS_VARIABLE
from generator.pipeline.generate import GenerateOptions, generate
from generator.serving.tritonserver import ServerOptions, ServerPorts, TritonProcess, free_ports, start_ready_server

from .assertions import Target

READY_TIMEOUT_S = 240


@pytest.fixture(scope="session")
def conda_channels() -> list[str]:
    """$TRITONGEN_CONDA_CHANNELS, else the offline channel (built once into build/conda-channel)."""
    configured = [c for c in os.environ.get(CHANNELS_VARIABLE, "").split(",") if c]
    if configured:
        return configured
    conda_channel.build_channel(pythons=["3.11"], progress=print)
    return [conda_channel.channel_url(conda_channel.DEFAULT_CHANNEL_DIR)]


@pytest.fixture(scope="session")
def generated_repository(tmp_path_factory: pytest.TempPathFactory, conda_channels: list[str]) -> Path:
    """The shipped specs generated for the local target (artifacts and environments come from build/)."""
    output = tmp_path_factory.mktemp("generated") / "repository"
    generate(GenerateOptions(output=output, cores=2, channels=conda_channels))
    return output


@pytest.fixture(scope="session")
def server_process(generated_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonProcess]:
    """A real tritonserver on free ports serving every generated model."""
    http, grpc, metrics = free_ports(3)
    options = ServerOptions(repository=generated_repository, ports=ServerPorts(http, grpc, metrics))
    workdir = tmp_path_factory.mktemp("server")
    process = start_ready_server(options, workdir, READY_TIMEOUT_S)
    try:
        yield process
    finally:
        code = process.stop()
        shutil.copy(process.log_path, workdir / "tritonserver.final.log")
        print(f"tritonserver stopped with code {code}; log: {process.log_path}")


@pytest.fixture(scope="session")
def server(server_process: TritonProcess) -> Target:
    """HTTP and gRPC addresses of the session's server."""
    return Target(server_process.http_url, server_process.grpc_url)
