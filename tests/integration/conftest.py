"""Fixtures: a repository generated from models/ into a temp folder, served by a real tritonserver."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from generator.base.launch import ServerOptions, ServerPorts
from generator.environments import channel as conda_channel
from generator.environments.settings import CHANNELS_VARIABLE
from generator.pipeline.generate import GenerateOptions, generate
from generator.serving.ports import free_ports
from generator.serving.process import TritonProcess, start_ready_server
from tests.container_fixtures import start_prebuild, stop_prebuild

from .assertions import Target

READY_TIMEOUT_S = 240
INTEGRATION_TIMEOUT_S = 1200
"""Per-test limit here (pyproject's default, 300 s, is for unit tests): the first test of a
session also pays for its session fixtures (a fresh generate builds every artifact and
environment, then a server loads 20 models on 2 shared cores)."""
CONTAINER_TIMEOUT_S = 3600
"""Container tests: the first one builds the image (debootstrap) when it is not cached."""
HERE = Path(__file__).parent
FIXTURE_EXIT_TIMEOUT = "--exit-timeout-secs=5"
"""For servers a module shares, whose stop nothing asserts: tritonserver waits for its clients'
idle keep-alive HTTP connections up to this (default 30 s) before it unloads and exits."""


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the container tests' engine and image build in the background (see
    tests/container_fixtures.py), so that it overlaps the tests that run before them."""
    start_prebuild(session.items)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop a background build's engine that no container fixture took (e.g. after -x)."""
    stop_prebuild()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give the tests of this folder their timeout (an explicit @pytest.mark.timeout wins)."""
    for item in items:
        if HERE not in item.path.parents or item.get_closest_marker("timeout") is not None:
            continue
        limit = CONTAINER_TIMEOUT_S if item.get_closest_marker("container") else INTEGRATION_TIMEOUT_S
        item.add_marker(pytest.mark.timeout(limit))


def wait_until(
    condition: Callable[[], object], timeout_s: float, what: str | Callable[[], str], poll_s: float = 0.1
) -> None:
    """Wait until `condition()` is true (checked every `poll_s`), else fail naming `what`
    (a callable: evaluated then, e.g. to show what happened meanwhile).

    For conditions nothing signals (process tables, server state); the tests never sleep a
    fixed time to let something happen."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what() if callable(what) else what}")
        threading.Event().wait(poll_s)


@pytest.fixture(scope="session")
def conda_channels() -> list[str]:
    """$TRITONGEN_CONDA_CHANNELS, else the offline channel (built once into build/conda-channel)."""
    configured = [c for c in os.environ.get(CHANNELS_VARIABLE, "").split(",") if c]
    if configured:
        return configured
    conda_channel.build_channel(pythons=["3.10", "3.11"], progress=print)
    return [conda_channel.channel_url(conda_channel.DEFAULT_CHANNEL_DIR)]


@pytest.fixture(scope="session")
def generated_repository(tmp_path_factory: pytest.TempPathFactory, conda_channels: list[str]) -> Path:
    """The shipped specs generated for the local target (artifacts and environments come from build/)."""
    output = tmp_path_factory.mktemp("generated") / "repository"
    generate(GenerateOptions(output=output, cores=2, channels=conda_channels))
    return output


@pytest.fixture(scope="session")
def server_process(generated_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonProcess]:
    """A real tritonserver on free ports serving every generated model (a start that hangs
    fails with the log and the stubs' states: it is not retried)."""
    http, grpc, metrics = free_ports(3)
    options = ServerOptions(
        repository=generated_repository, ports=ServerPorts(http, grpc, metrics), extra_args=(FIXTURE_EXIT_TIMEOUT,)
    )
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
