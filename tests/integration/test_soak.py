"""A short soak in CI: mixed valid and 10% malformed traffic on a real tritonserver.

The full 10-minute soak is `python -m bench.soak` (report under bench/results/).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.soak import MALFORMED, SoakReport, Target, run_soak
from generator.base.launch import ServerOptions, ServerPorts
from generator.serving.ports import free_ports
from generator.serving.process import TritonProcess, start_server
from generator.serving.watchdog import StubWatchdog

from .assertions import BAD_REQUESTS
from .conftest import FIXTURE_EXIT_TIMEOUT, READY_TIMEOUT_S

pytestmark = pytest.mark.integration

SOAK_SECONDS = float(os.environ.get("TRITONGEN_SOAK_SECONDS", "20"))


@pytest.fixture(scope="module")
def soak_server(generated_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonProcess]:
    workdir = tmp_path_factory.mktemp("soak")
    repository = workdir / "repository"
    shutil.copytree(generated_repository, repository, copy_function=os.link)
    http, grpc, metrics = free_ports(3)
    options = ServerOptions(
        repository=repository,
        ports=ServerPorts(http, grpc, metrics),
        admin_key="soak-admin-key-0123456789",
        extra_args=(FIXTURE_EXIT_TIMEOUT,),
    )
    server = start_server(options, workdir)
    try:
        server.wait_ready(READY_TIMEOUT_S)
        yield server
    finally:
        server.stop()


def test_soak_covers_the_bad_requests_of_the_integration_tests() -> None:
    assert set(BAD_REQUESTS) <= set(MALFORMED)


def test_short_soak_fails_no_valid_request(soak_server: TritonProcess) -> None:
    watchdog = StubWatchdog(soak_server.process.pid, soak_server.http_url, soak_server.admin_headers())
    watchdog.start()
    try:
        report: SoakReport = run_soak(
            Target(soak_server.http_url, soak_server.grpc_url),
            soak_server.process.pid,
            soak_server.options.repository,
            duration_s=SOAK_SECONDS,
            rate=15,
            sample_s=5,
            warmup_s=SOAK_SECONDS / 3,
            watchdog=watchdog,
        )
    finally:
        watchdog.stop()
    print(report.summary())
    assert report.valid_sent >= 0.8 * 15 * SOAK_SECONDS * 0.9
    assert report.valid_failed == 0, report.valid_errors
    assert report.malformed_sent > 0
    assert all(case.accepted == 0 for case in report.malformed.values()), report.summary()
    assert all(case.rejected_unclearly == 0 for case in report.malformed.values()), report.summary()
    assert report.server_live_at_end and report.watchdog_restarts == 0
    assert len(report.memory) >= SOAK_SECONDS / 5
