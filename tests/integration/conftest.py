"""Fixtures: a repository generated from models/ into a temp folder, served by a real tritonserver."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from generator.generate import GenerateOptions, generate
from generator.tritonserver import ServerOptions, ServerPorts, free_ports, start_server

from .assertions import Target

READY_TIMEOUT_S = 300


@pytest.fixture(scope="session")
def generated_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped specs generated for the local target (artifacts come from build/ cache)."""
    output = tmp_path_factory.mktemp("generated") / "repository"
    generate(GenerateOptions(output=output, cores=2))
    return output


@pytest.fixture(scope="session")
def server(
    generated_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    """A real tritonserver on free ports serving every generated model."""
    http, grpc, metrics = free_ports(3)
    options = ServerOptions(repository=generated_repository, ports=ServerPorts(http, grpc, metrics))
    workdir = tmp_path_factory.mktemp("server")
    process = start_server(options, workdir)
    try:
        process.wait_ready(READY_TIMEOUT_S)
        yield Target(process.http_url, process.grpc_url)
    finally:
        code = process.stop()
        shutil.copy(process.log_path, workdir / "tritonserver.final.log")
        print(f"tritonserver stopped with code {code}; log: {process.log_path}")
