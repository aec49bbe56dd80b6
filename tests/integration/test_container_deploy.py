"""The generated deploy files restrict the admin APIs in a real container.

`docker-run.sh`, as `tritongen generate` writes it, is run with a secret file the operator names
at run time (`TRITONGEN_ADMIN_KEY_FILE`): the server answers clients, and refuses every admin
API (model control and repository, config, statistics, trace, logging, shared memory) without
the key, over HTTP and gRPC. Without a key and without `TRITONGEN_ADMIN_OPEN=1` it refuses to
start, saying why. Image: the local one (or `TRITONGEN_TEST_IMAGE`), target `local`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from generator.base.launch import ADMIN_KEY_VARIABLE, ServerPorts, repository_models
from generator.pipeline.deploy import render_deploy_files
from generator.pipeline.deploy.launcher import (
    ADMIN_KEY_FILE_VARIABLE,
    ADMIN_OPEN_VARIABLE,
    CONTAINER_KEY_FILE,
    REFUSAL_EXIT_CODE,
)
from generator.serving.ports import free_ports
from tests.container_fixtures import docker_engine, triton_image  # noqa: F401  (fixtures)
from tests.dockerd import DockerEngine

from . import assertions
from .assertions import Target
from .restriction import check_admin_restricted

pytestmark = [pytest.mark.integration, pytest.mark.container]
CONTAINER_NAME = "tritongen-local"


def _environment(engine: DockerEngine, image: str) -> dict[str, str]:
    """This process's environment without any admin variable, pointing at `engine` and `image`."""
    names = (ADMIN_KEY_VARIABLE, ADMIN_KEY_FILE_VARIABLE, ADMIN_OPEN_VARIABLE)
    kept = {name: value for name, value in os.environ.items() if name not in names}
    return {**kept, "TRITON_IMAGE": image, **engine.environment()}


def _ready(http_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{http_url}/v2/health/ready", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_docker_run_script_restricts_the_admin_apis_to_the_secret_files_key(
    docker_engine: DockerEngine,  # noqa: F811
    triton_image: str,  # noqa: F811
    generated_repository: Path,
    tmp_path: Path,
) -> None:
    import docker

    ports = ServerPorts(*free_ports(3))
    files = render_deploy_files(
        str(generated_repository), ports, "local", models=repository_models(generated_repository)
    )
    script = tmp_path / "docker-run.sh"
    script.write_text(files["docker-run.sh"])
    key = secrets.token_urlsafe(24)
    secret = tmp_path / "secrets" / "admin-key"
    secret.parent.mkdir()
    secret.write_text(key + "\n")
    secret.chmod(0o600)
    assert all(key not in text for text in files.values())
    client = docker.DockerClient(base_url=docker_engine.host)
    log_path = tmp_path / "docker-run.log"
    environment = {**_environment(docker_engine, triton_image), ADMIN_KEY_FILE_VARIABLE: str(secret)}
    with log_path.open("wb") as log:
        process = subprocess.Popen(["sh", str(script)], stdout=log, stderr=subprocess.STDOUT, env=environment)
    try:
        target = Target(f"127.0.0.1:{ports.http}", f"127.0.0.1:{ports.grpc}")
        deadline = time.monotonic() + 300
        while not _ready(target.http_url):
            assert process.poll() is None, log_path.read_text(errors="replace")[-5000:]
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")[-5000:]
            time.sleep(0.5)
        attrs = client.containers.get(CONTAINER_NAME).attrs
        mounts = {m["Destination"]: m["RW"] for m in attrs["Mounts"]}
        assert mounts == {"/models": False, CONTAINER_KEY_FILE: False}, mounts
        assert not any(key in value for value in attrs["Config"]["Env"]), "the key is in the container's environment"
        assertions.check_embeddings(target, "grpc", "minilm_embed")  # both protocols: test_container.py
        check_admin_restricted(target.http_url, target.grpc_url, key)
        assert "admin APIs (model-repository" in log_path.read_text(errors="replace")
    finally:
        for container in client.containers.list(all=True, filters={"name": CONTAINER_NAME}):
            container.remove(force=True)
        process.wait(timeout=60)
        client.close()


def test_docker_run_script_refuses_to_start_without_a_key(
    docker_engine: DockerEngine,  # noqa: F811
    triton_image: str,  # noqa: F811
    generated_repository: Path,
    tmp_path: Path,
) -> None:
    ports = ServerPorts(*free_ports(3))
    script = tmp_path / "docker-run.sh"
    script.write_text(render_deploy_files(str(generated_repository), ports, "local")["docker-run.sh"])
    environment = _environment(docker_engine, triton_image)
    done = subprocess.run(["sh", str(script)], env=environment, capture_output=True, text=True, timeout=120)
    assert done.returncode == REFUSAL_EXIT_CODE, (done.returncode, done.stdout, done.stderr)
    assert "refusing to start: no admin key" in done.stderr, done.stderr
    assert ADMIN_KEY_VARIABLE in done.stderr and f"{ADMIN_OPEN_VARIABLE}=1" in done.stderr
    assert not _ready(f"127.0.0.1:{ports.http}")


def test_compose_file_restricts_the_admin_apis_to_the_key_in_the_environment(
    docker_engine: DockerEngine,  # noqa: F811
    triton_image: str,  # noqa: F811
    generated_repository: Path,
    tmp_path: Path,
) -> None:
    """`docker-compose up` on the generated docker-compose.yml (Debian's docker-compose, see
    tests/setup_system.sh) with the key in the shell's environment."""
    compose = shutil.which("docker-compose")
    assert compose is not None, "docker-compose is missing: run tests/setup_system.sh"
    ports = ServerPorts(*free_ports(3))
    models = repository_models(generated_repository)
    text = render_deploy_files(str(generated_repository), ports, "local", models=models)["docker-compose.yml"]
    (tmp_path / "docker-compose.yml").write_text(text)
    key = secrets.token_hex(20)
    environment = {**_environment(docker_engine, triton_image), ADMIN_KEY_VARIABLE: key}
    command = [
        compose,
        "--project-directory",
        str(tmp_path),
        "-p",
        "tritongen-test",
        "-f",
        str(tmp_path / "docker-compose.yml"),
    ]
    up = subprocess.run([*command, "up", "-d"], env=environment, capture_output=True, text=True, timeout=300)
    try:
        assert up.returncode == 0, up.stderr
        target = Target(f"127.0.0.1:{ports.http}", f"127.0.0.1:{ports.grpc}")
        deadline = time.monotonic() + 300
        while not _ready(target.http_url):
            assert time.monotonic() < deadline, subprocess.run(
                [*command, "logs"], env=environment, capture_output=True, text=True
            ).stdout[-5000:]
            time.sleep(0.5)
        check_admin_restricted(target.http_url, target.grpc_url, key)
    finally:
        # 5 s, not 30: nothing here asserts the stop, and tritonserver would wait that long for
        # the checks' idle keep-alive connections before exiting on SIGTERM.
        subprocess.run([*command, "down", "-t", "5"], env=environment, capture_output=True, timeout=300)
