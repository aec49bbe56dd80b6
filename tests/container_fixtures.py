"""Container fixtures: a Docker engine, the Triton image, and Triton containers (testcontainers).

Import the fixtures into a test module (or a conftest):

    from tests.container_fixtures import docker_engine, triton_image  # noqa: F401

- `docker_engine` uses the engine that answers (`$DOCKER_HOST`, the default socket, the
  project's own) or starts a private `dockerd` (tests/dockerd.py) and stops it at the end;
  it sets DOCKER_HOST, TESTCONTAINERS_RYUK_DISABLED=true (Ryuk needs a pull) and
  TESTCONTAINERS_CONNECTION_MODE=docker_host. It skips the tests (fails them in CI), saying why, only when no
  engine answers and none can be started.
- `triton_image` is `$TRITONGEN_TEST_IMAGE` as is (e.g. `nvcr.io/nvidia/tritonserver:24.10-py3`
  for users with registry access), otherwise the project's stand-in of that image, built by
  `generator.containers.image.build_image` when its inputs changed. When a session collects
  container tests, `start_prebuild` (called by tests/integration/conftest.py once collection is
  done) starts the engine and that build in a background thread, so that the build (minutes on
  a fresh machine, mostly downloads and disk) runs while the tests before the container tests
  do; both fixtures then wait for it. Its log goes to build/image/prebuild.log.
- `deploy_command(repository, image)` is what the generated `docker-run.sh` of a repository
  passes to `docker run` (the script is run with a `docker` that records its arguments).
- `run_triton_container(image, repository)` starts tritonserver with the repository mounted
  read-only at /models, shared memory of 256 MB and ports 8000-8002 published, and waits for
  `/v2/health/ready` (the container log is printed when it does not get ready); `command`
  and `shm_size` take a deploy command's.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from generator.base.launch import repository_models
from generator.containers.image import BUILD_DIR, build_image
from generator.pipeline.deploy.launcher import CONTAINER_REPOSITORY, container_command
from generator.serving.diagnostics import load_errors
from tests.dockerd import DockerEngine, DockerUnavailable, ensure_engine

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer

IMAGE_VARIABLE = "TRITONGEN_TEST_IMAGE"
TARGET_VARIABLE = "TRITONGEN_TEST_TARGET"
SHM_SIZE = "256m"
READY_TIMEOUT_S = 300.0
TESTCONTAINERS_SETTINGS = {
    "TESTCONTAINERS_RYUK_DISABLED": "true",
    "TESTCONTAINERS_CONNECTION_MODE": "docker_host",
}


def container_target() -> str:
    """The generator target the container tests use: `$TRITONGEN_TEST_TARGET`, else `ngc`, the
    repository users deploy (served unmodified by NVIDIA's image and by its stand-in)."""
    return os.environ.get(TARGET_VARIABLE) or "ngc"


def stand_in_image() -> bool:
    """True when the tests run the project's stand-in, not an image named by the user."""
    return user_image() is None


def user_image() -> str | None:
    """The image named by `$TRITONGEN_TEST_IMAGE`, if any (used as is, never built)."""
    return os.environ.get(IMAGE_VARIABLE) or None


def _configure_testcontainers(engine: DockerEngine) -> None:
    os.environ.update(engine.environment())
    os.environ.update(TESTCONTAINERS_SETTINGS)
    # testcontainers reads some settings when it is first imported: set them on its config too.
    from testcontainers.core.config import ConnectionMode, testcontainers_config

    testcontainers_config.ryuk_disabled = True
    testcontainers_config.connection_mode_override = ConnectionMode.docker_host


@dataclass
class Prebuild:
    """The engine and the stand-in image, made in a background thread while other tests run."""

    thread: threading.Thread | None = None
    engine: DockerEngine | None = None
    engine_error: DockerUnavailable | None = None
    image: str | None = None
    image_error: BaseException | None = None
    seconds: float = 0.0
    log_path: Path = BUILD_DIR / "prebuild.log"

    def run(self) -> None:
        started = time.monotonic()
        try:
            self.engine = ensure_engine()
        except DockerUnavailable as error:
            self.engine_error = error
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("w", encoding="utf-8") as log:
            try:
                self.image = build_image(self.engine.host, log=lambda line: print(line, file=log, flush=True))
            except BaseException as error:  # re-raised by the fixture that waits for it
                self.image_error = error
        self.seconds = time.monotonic() - started


PREBUILD = Prebuild()


def start_prebuild(items: Sequence[pytest.Item]) -> None:
    """Start the engine and the image build in the background if `items` hold container tests
    that will build the stand-in (no `$TRITONGEN_TEST_IMAGE`)."""
    if PREBUILD.thread is not None or user_image() or not any(i.get_closest_marker("container") for i in items):
        return
    PREBUILD.thread = threading.Thread(target=PREBUILD.run, name="image-prebuild", daemon=True)
    PREBUILD.thread.start()


def stop_prebuild() -> None:
    """Stop the engine the background build started, if no fixture did (idempotent)."""
    if PREBUILD.thread is not None:
        PREBUILD.thread.join()
    if PREBUILD.engine is not None:
        PREBUILD.engine.stop()


def _prebuilt() -> Prebuild | None:
    """The finished background build, if one was started (waits for it)."""
    if PREBUILD.thread is None:
        return None
    PREBUILD.thread.join()
    return PREBUILD


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """An answering Docker engine, configured for testcontainers; skips if there is none, except
    in CI (`CI=true`), where the container tests must run: there it fails instead."""
    saved = {k: os.environ.get(k) for k in ("DOCKER_HOST", *TESTCONTAINERS_SETTINGS)}
    prebuilt = _prebuilt()
    try:
        if prebuilt is not None and prebuilt.engine_error is not None:
            raise prebuilt.engine_error
        engine = prebuilt.engine if prebuilt is not None and prebuilt.engine is not None else ensure_engine()
    except DockerUnavailable as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and no Docker engine can be started: {error}")
        print(f"container tests skipped: {error}", file=sys.stderr)
        pytest.skip(f"no Docker engine can be started: {error}")
    print(f"docker engine: {engine.host}{' (started for the tests)' if engine.owned else ''}")
    _configure_testcontainers(engine)
    try:
        yield engine
    finally:
        engine.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def triton_image(docker_engine: DockerEngine) -> str:
    """`$TRITONGEN_TEST_IMAGE`, or the local image (built if its inputs changed)."""
    image = user_image()
    if image:
        print(f"container tests use the user image {image} (target {container_target()})")
        return image
    prebuilt = _prebuilt()
    if prebuilt is not None and prebuilt.image_error is not None:
        log = prebuilt.log_path.read_text(encoding="utf-8", errors="replace")[-5000:]
        raise RuntimeError(f"the image build failed: {prebuilt.image_error}\n{log}") from prebuilt.image_error
    if prebuilt is not None and prebuilt.image is not None:
        print(
            f"local image {prebuilt.image} ready (background build) after {prebuilt.seconds:.0f}s ({prebuilt.log_path})"
        )
        return prebuilt.image
    started = time.monotonic()
    tag = build_image(docker_engine.host, log=lambda line: print(f"[image] {line}", flush=True))
    print(f"local image {tag} ready in {time.monotonic() - started:.0f}s")
    return tag


@dataclass(frozen=True)
class DeployCommand:
    """What a generated `docker-run.sh` passes to `docker run`."""

    arguments: list[str]
    """Every argument of `docker`, from `run` on."""
    image: str
    command: list[str]
    """The container's command line (after the image)."""
    script_environment: dict[str, str]
    """The environment the script ran with (bare `--env NAME` options take their value here)."""

    def option(self, name: str) -> list[str]:
        """Values of `--name=V` / `--name V` options before the image."""
        options = self.arguments[: self.arguments.index(self.image)]
        values = []
        for index, argument in enumerate(options):
            if argument.startswith(f"{name}="):
                values.append(argument.split("=", 1)[1])
            elif argument == name and index + 1 < len(options):
                values.append(options[index + 1])
        return values

    def environment(self) -> dict[str, str]:
        """The container's environment variables (`-e`/`--env`; a bare name takes the caller's)."""
        found: dict[str, str] = {}
        for value in self.option("-e") + self.option("--env"):
            name, _, given = value.partition("=")
            if "=" in value:
                found[name] = given
            elif name in self.script_environment:
                found[name] = self.script_environment[name]
        return found


_RECORDING_DOCKER = """#!{python}
import json, os, sys
with open(os.environ["TRITONGEN_DOCKER_ARGS"], "w") as handle:
    json.dump(sys.argv[1:], handle)
"""


def deploy_command(repository: Path, image: str, environment: dict[str, str] | None = None) -> DeployCommand:
    """Run `<repository>/docker-run.sh` with `TRITON_IMAGE=image` and a `docker` that records its
    arguments instead of running anything; return them."""
    script = repository / "docker-run.sh"
    with tempfile.TemporaryDirectory(prefix="tritongen-docker-") as folder:
        recorder = Path(folder) / "docker"
        recorder.write_text(_RECORDING_DOCKER.format(python=sys.executable))
        recorder.chmod(0o755)
        recorded = Path(folder) / "arguments.json"
        env = {
            **os.environ,
            **(environment or {}),
            "PATH": f"{folder}{os.pathsep}{os.environ.get('PATH', '')}",
            "TRITON_IMAGE": image,
            "TRITONGEN_DOCKER_ARGS": str(recorded),
        }
        result = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=60)
        if result.returncode != 0 or not recorded.exists():
            raise RuntimeError(f"{script} did not run docker ({result.returncode}): {result.stderr.strip()}")
        arguments: list[str] = json.loads(recorded.read_text())
    if arguments[:1] != ["run"] or image not in arguments:
        raise RuntimeError(f"{script} does not `docker run {image}`: {arguments}")
    return DeployCommand(arguments, image, arguments[arguments.index(image) + 1 :], env)


@dataclass
class TritonContainer:
    """A running Triton container and where it answers."""

    container: DockerContainer
    host: str
    ports: dict[int, int]
    """Container port -> published host port."""

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.ports[8000]}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.ports[8001]}"

    @property
    def metrics_url(self) -> str:
        return f"{self.host}:{self.ports[8002]}"

    def logs(self) -> str:
        stdout, stderr = self.container.get_logs()
        return (stdout + stderr).decode(errors="replace")

    def status(self) -> str:
        wrapped = self.container.get_wrapped_container()
        wrapped.reload()
        return str(wrapped.status)

    def is_ready(self) -> bool:
        try:
            url = f"http://{self.http_url}/v2/health/ready"
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Wait for `/v2/health/ready`; return the seconds it took or raise with the log."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.is_ready():
                return time.monotonic() - started
            status = self.status()
            if status in ("exited", "dead"):
                raise RuntimeError(f"the Triton container {status} before it was ready")
            log = self.logs()
            if "Started HTTPService" in log and load_errors(log):
                raise RuntimeError(f"models failed to load in the container:\n{load_errors(log)}")
            time.sleep(0.5)
        raise RuntimeError(f"the Triton container was not ready after {timeout_s:.0f}s")


@contextlib.contextmanager
def run_triton_container(
    image: str,
    repository: Path,
    models: Sequence[str] = (),
    ready_timeout_s: float = READY_TIMEOUT_S,
    shm_size: str = SHM_SIZE,
    log_verbose: int = 0,
    command: Sequence[str] | None = None,
    environment: dict[str, str] | None = None,
    read_only: bool = True,
) -> Iterator[TritonContainer]:
    """Serve `repository` (mounted read-only at /models) in `image` until the block ends.

    Needs the environment `docker_engine` sets up. The command is `command` (e.g. a
    `deploy_command`'s), else the one the deploy files use
    (`generator.pipeline.deploy.launcher.container_command`), valid for the stand-in and NVIDIA's image.
    `read_only=False` mounts the repository writable (the deploy files never do).
    """
    from testcontainers.core.container import DockerContainer

    # The model folders of the host's copy: `*` would also try the shared `_envs/` folder.
    command = list(command or container_command(models or repository_models(repository), log_verbose=log_verbose))
    container = (
        DockerContainer(image)
        .with_command(command)
        .with_envs(**(environment or {}))
        .with_volume_mapping(str(repository.resolve()), str(CONTAINER_REPOSITORY), "ro" if read_only else "rw")
        .with_exposed_ports(8000, 8001, 8002)
        .with_kwargs(shm_size=shm_size, labels={"tritongen.test": "container"})
    )
    started = time.monotonic()
    container.start()
    triton: TritonContainer | None = None
    try:
        host = container.get_container_host_ip()
        ports = {port: container.get_exposed_port(port) for port in (8000, 8001, 8002)}
        triton = TritonContainer(container, host, ports)
        try:
            triton.wait_ready(ready_timeout_s)
        except RuntimeError:
            print(f"--- Triton container log ({image}) ---\n{triton.logs()}\n--- end ---")
            raise
        print(
            f"Triton container {image} ready in {time.monotonic() - started:.1f}s "
            f"(http {triton.http_url}, grpc {triton.grpc_url})"
        )
        yield triton
    finally:
        container.stop()
