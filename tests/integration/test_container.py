"""The generated repository served by Triton in a container (testcontainers, real Docker engine).

Every end-to-end test of test_serving.py is imported here and runs again, unchanged, against
the container: this module's `server` fixture overrides the process-based one. The image is
the local one (built from a debootstrap base, see generator/image.py) unless
`TRITONGEN_TEST_IMAGE` names another, e.g. `nvcr.io/nvidia/tritonserver:24.10-py3` (which
implies `TRITONGEN_TEST_TARGET=ngc`). The tests skip only when no Docker engine can be started.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from generator.containers.deploy import render_deploy_files
from generator.environments.build import BuiltEnvironment
from generator.pipeline.generate import GenerateOptions, generate
from generator.serving.tritonserver import ServerPorts, free_ports
from tests.container_fixtures import (  # noqa: F401  (fixtures)
    TritonContainer,
    container_target,
    docker_engine,
    run_triton_container,
    triton_image,
)
from tests.dockerd import DockerEngine

from . import assertions, test_serving
from .assertions import Target
from .test_environments import (  # noqa: F401  (fixtures and helpers of the environment tests)
    TEXTS,
    TOKENIZER_VERSIONS,
    _check_answer,
    _infer,
    _initialize_lines,
    _place_env,
    _preprocessing_model,
    built_envs,
    channel_url,
)

pytestmark = [pytest.mark.integration, pytest.mark.container]

# Every test of test_serving.py (they take only `server: Target`) runs here too, unchanged.
_SHARED_TESTS = [name for name in dir(test_serving) if name.startswith("test_")]
globals().update({name: getattr(test_serving, name) for name in _SHARED_TESTS})


@pytest.fixture(scope="module")
def container_repository(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped specs generated for the container's target (`local` is shared with the
    process-based tests)."""
    target = container_target()
    if target == "local":
        repository: Path = request.getfixturevalue("generated_repository")
        return repository
    channels: list[str] = request.getfixturevalue("conda_channels")
    output = tmp_path_factory.mktemp(f"generated-{target}") / "repository"
    options = GenerateOptions(output=output, target=target, cores=2, channels=channels)  # type: ignore[arg-type]
    generate(options)
    return output


@pytest.fixture(scope="module")
def triton_container(
    docker_engine: DockerEngine,  # noqa: F811
    triton_image: str,  # noqa: F811
    container_repository: Path,
) -> Iterator[TritonContainer]:
    """Every generated model served by Triton in a container."""
    with run_triton_container(triton_image, container_repository) as container:
        yield container


@pytest.fixture(scope="module")
def server(triton_container: TritonContainer) -> Target:
    """Overrides the process-based `server`: the imported tests run against the container."""
    return Target(triton_container.http_url, triton_container.grpc_url)


def test_every_generated_model_is_ready(triton_container: TritonContainer, container_repository: Path) -> None:
    """The repository index lists every generated model as READY."""
    request = urllib.request.Request(
        f"http://{triton_container.http_url}/v2/repository/index", data=b"{}", method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        index = json.loads(response.read())
    states = {entry["name"]: entry.get("state") for entry in index}
    generated = {p.parent.name for p in container_repository.glob("*/config.pbtxt")}
    assert generated and generated <= set(states), generated - set(states)
    assert all(states[name] == "READY" for name in generated), states


def test_repository_is_mounted_read_only(triton_container: TritonContainer) -> None:
    mounts = triton_container.container.get_wrapped_container().attrs["Mounts"]
    models = [m for m in mounts if m["Destination"] == "/models"]
    assert len(models) == 1 and models[0]["RW"] is False, mounts
    host_config = triton_container.container.get_wrapped_container().attrs["HostConfig"]
    assert host_config["ShmSize"] == 256 * 1024 * 1024


def test_metrics_are_served(triton_container: TritonContainer) -> None:
    with urllib.request.urlopen(f"http://{triton_container.metrics_url}/metrics", timeout=30) as r:
        text = r.read().decode()
    assert "nv_inference_request_success" in text


def test_two_versions_two_tokenizers_in_a_container(
    request: pytest.FixtureRequest,
    docker_engine: DockerEngine,  # noqa: F811
    triton_image: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Per-version execution environments inside the container: v1 (tokenizers 0.20, tarball)
    and v2 (tokenizers 0.23, unpacked folder) of one model, in a read-only mounted repository,
    each run their own library, not the image's (tokenizers 0.23 in dist-packages)."""
    if container_target() != "local":
        pytest.skip("needs the project's Python-based backends: NVIDIA's image has none")
    envs: dict[str, BuiltEnvironment] = request.getfixturevalue("built_envs")
    repository = tmp_path / "repository"
    layout = {"tok_v1_pre": ("textprep-tok020", False), "tok_v2_pre": ("textprep-tok023", True)}
    for model, (env, unpacked) in layout.items():
        _preprocessing_model(repository, model, "placeholder")
        env_path = _place_env(repository, model, envs[env], unpacked)
        config = repository / model / "config.pbtxt"
        config.write_text(config.read_text().replace("placeholder", env_path))
    with run_triton_container(triton_image, repository) as container:
        answers = {model: _infer(container, model, TEXTS) for model in layout}  # type: ignore[arg-type]
        log = container.logs()
    shutil.rmtree(repository, ignore_errors=True)
    for outputs in answers.values():
        _check_answer(outputs, TEXTS)
    seen = _initialize_lines(log)
    for model, (env, _) in layout.items():
        version, file = seen[model]
        assert version == TOKENIZER_VERSIONS[env], f"{model} ran tokenizers {version}"
        assert "/dist-packages/" not in file, f"{model} imported the image's tokenizers: {file}"
        assert "/site-packages/tokenizers/" in file
    assert seen["tok_v1_pre"][1] != seen["tok_v2_pre"][1]


def test_generated_docker_run_script_serves_the_repository(
    docker_engine: DockerEngine,  # noqa: F811
    triton_image: str,  # noqa: F811
    container_repository: Path,
    tmp_path: Path,
) -> None:
    """The deploy script `generate` writes (docker-run.sh) serves the repository for real."""
    import docker

    ports = ServerPorts(*free_ports(3))
    files = render_deploy_files(str(container_repository), ports, container_target())  # type: ignore[arg-type]
    script = tmp_path / "docker-run.sh"
    script.write_text(files["docker-run.sh"])
    name = f"tritongen-{container_target()}"
    client = docker.DockerClient(base_url=docker_engine.host)
    log_path = tmp_path / "docker-run.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["sh", str(script)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TRITON_IMAGE": triton_image, **docker_engine.environment()},
        )
    try:
        target = Target(f"127.0.0.1:{ports.http}", f"127.0.0.1:{ports.grpc}")
        deadline = time.monotonic() + 300
        while not _ready(target.http_url):
            assert process.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")[-5000:]
            time.sleep(0.5)
        mounts = client.containers.get(name).attrs["Mounts"]
        assert [m["RW"] for m in mounts if m["Destination"] == "/models"] == [False]
        for protocol in ("http", "grpc"):
            assertions.check_embeddings(target, protocol, "minilm_embed")
    finally:
        for container in client.containers.list(all=True, filters={"name": name}):
            container.remove(force=True)
        process.wait(timeout=60)
        client.close()


def _ready(http_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{http_url}/v2/health/ready", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False
