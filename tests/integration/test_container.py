"""The `ngc` repository, unmodified, served in a container exactly as its docker-run.sh does.

The image is the project's stand-in of `nvcr.io/nvidia/tritonserver:24.10-py3` (built locally,
see generator/containers/image.py and docs/ngc-standin.md) unless `TRITONGEN_TEST_IMAGE` names
another, e.g. NVIDIA's own image where it can be pulled. The repository is (a checked copy of) the one
`tritongen generate --target ngc` writes (build/ngc/repository; `TRITONGEN_TEST_TARGET=local`
serves the `local` one instead), mounted read-only, with the command line its generated
`docker-run.sh` passes to `docker run`. The end-to-end tests of test_serving.py (HTTP and gRPC;
embeddings on one entry point per format) run again against it: this module's `server` fixture overrides
the process-based one; the per-version environment checks read the container's log.

The stand-in's own promises (NVIDIA's backend folder layout, Python 3.10 for python models
without their own stub, Python 3.11 for the runners only, rejection of what NVIDIA's image
rejects) are tested on hand-made models too. The tests skip only when no Docker engine can be
started.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from generator.base.launch import ADMIN_HEADER, ADMIN_KEY_VARIABLE, ServerPorts, repository_models
from generator.containers.image import (
    IMAGE_PYTRITON_ROOT,
    NVIDIA_BACKENDS,
    RUNNER_BACKENDS,
    SYSTEM_PYTHON,
)
from generator.environments.cache import BuiltEnvironment, build_environment
from generator.environments.envspec import parse_environment_spec, spec_path_for
from generator.environments.settings import CHANNELS_VARIABLE
from generator.environments.stubs import place_stub
from generator.kinds.targets import CONTAINER_TRITON_ROOT, PRODUCTION
from generator.pipeline.deploy import render_deploy_files
from generator.pipeline.deploy.launcher import CONTAINER_REPOSITORY
from generator.pipeline.manifest import read_manifest
from generator.serving.ports import free_ports
from tests.container_fixtures import (  # noqa: F401  (fixtures)
    SHM_SIZE,
    DeployCommand,
    TritonContainer,
    container_target,
    deploy_command,
    docker_engine,
    run_triton_container,
    stand_in_image,
    triton_image,
)
from tests.dockerd import DockerEngine

from . import assertions, test_serving
from .assertions import Target
from .conftest import wait_until
from .test_environments import (  # noqa: F401  (fixtures and helpers of the environment tests)
    TEXTS,
    TOKENIZER_VERSIONS,
    _check_answer,
    _infer,
    _place_env,
    _tokenizer_file,
)

pytestmark = [pytest.mark.integration, pytest.mark.container]
PROJECT = Path(__file__).resolve().parents[2]
NGC_REPOSITORY = PROJECT / "build" / "ngc" / "repository"
"""Where `tritongen generate --target ngc` writes the repository users deploy."""

# The tests of test_serving.py (they take only `server: Target`) run here too, unchanged: the
# `ngc` repository in the stand-in of NVIDIA's image answers as the local one does. Batching
# (every batch size, one text vs a batch) is the same server binary and batching code in both,
# so it is checked once, on the process-based server.
_BATCHING_TESTS = {"test_every_batch_size", "test_text_result_independent_of_batch"}
_SHARED_TESTS = [name for name in dir(test_serving) if name.startswith("test_") and name not in _BATCHING_TESTS]
globals().update({name: getattr(test_serving, name) for name in _SHARED_TESTS})


@pytest.mark.parametrize(
    ("model", "protocol"), [("minilm_embed", "grpc"), ("minilm_embed_batch", "http"), ("minilm_embed_ts_v1", "http")]
)
def test_embeddings_match_reference(server: Target, protocol: str, model: str) -> None:
    """One entry point per format and protocol here: the process-based suite covers every one
    (the same ensembles; what differs here is the ngc repository and the image)."""
    assertions.check_embeddings(server, protocol, model)


def _tritongen(*arguments: str, channels: list[str]) -> None:
    """Run the `tritongen` command line as a user would."""
    executable = Path(sys.executable).parent / "tritongen"
    command = [str(executable)] if executable.exists() else [sys.executable, "-m", "generator.cli"]
    env = {**os.environ, CHANNELS_VARIABLE: ",".join(channels)}
    result = subprocess.run([*command, *arguments], cwd=PROJECT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"tritongen {' '.join(arguments)} failed:\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def container_repository(conda_channels: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tritongen generate --target ngc` (build/ngc/repository), as users deploy it, served from
    a private copy that `tritongen check` proves identical to a fresh generation (another
    `generate` on a shared machine replaces build/ngc/repository under a running server). The
    `local` target is generated into a temporary folder (repository/ is the committed copy)."""
    target = container_target()
    snapshot = tmp_path_factory.mktemp(f"generated-{target}") / "repository"
    if target == "ngc":
        _tritongen("generate", "--target", "ngc", channels=conda_channels)
        shutil.copytree(NGC_REPOSITORY, snapshot, symlinks=True)
    else:
        _tritongen("generate", "--target", target, "--output", str(snapshot), channels=conda_channels)
    _tritongen("check", "--target", target, "--output", str(snapshot), channels=conda_channels)
    return snapshot


@pytest.fixture(scope="module")
def admin_key() -> str:
    """The key the operator gives docker-run.sh (`TRITONGEN_ADMIN_KEY`)."""
    return secrets.token_hex(24)


@pytest.fixture(scope="module")
def deploy(container_repository: Path, triton_image: str, admin_key: str) -> DeployCommand:  # noqa: F811
    """What the repository's own docker-run.sh passes to `docker run`, given an admin key."""
    return deploy_command(container_repository, triton_image, {ADMIN_KEY_VARIABLE: admin_key})


@pytest.fixture(scope="module")
def triton_container(
    docker_engine: DockerEngine,  # noqa: F811
    triton_image: str,  # noqa: F811
    container_repository: Path,
    deploy: DeployCommand,
) -> Iterator[TritonContainer]:
    """The repository served by the deploy command line of its docker-run.sh."""
    shm_size = (deploy.option("--shm-size") or [SHM_SIZE])[-1]
    with run_triton_container(
        triton_image,
        container_repository,
        shm_size=shm_size,
        command=deploy.command,
        environment=deploy.environment(),
    ) as container:
        yield container


@pytest.fixture(scope="module")
def server(triton_container: TritonContainer) -> Target:
    """Overrides the process-based `server`: the imported tests run against the container."""
    return Target(triton_container.http_url, triton_container.grpc_url)


def test_deploy_command_serves_every_model_from_a_read_only_mount(
    deploy: DeployCommand, container_repository: Path
) -> None:
    """The command the tests run is the generated one: NVIDIA's paths, every model folder."""
    mounts = deploy.option("--mount")
    assert f"type=bind,source={container_repository.resolve()},target={CONTAINER_REPOSITORY},readonly" in mounts
    assert str(CONTAINER_TRITON_ROOT / "bin" / "tritonserver") in deploy.command
    assert f"--model-repository={CONTAINER_REPOSITORY}" in deploy.command
    assert f"--backend-directory={CONTAINER_TRITON_ROOT / 'backends'}" in deploy.command
    loaded = [a.removeprefix("--load-model=") for a in deploy.command if a.startswith("--load-model=")]
    assert loaded == repository_models(container_repository)


def test_every_generated_model_is_ready(
    triton_container: TritonContainer, container_repository: Path, admin_key: str
) -> None:
    """The repository index (an admin API: the key is needed) lists every generated model as READY."""
    request = urllib.request.Request(
        f"http://{triton_container.http_url}/v2/repository/index",
        data=b"{}",
        method="POST",
        headers={ADMIN_HEADER: admin_key},
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


def test_each_preprocessing_model_runs_in_its_own_environment(triton_container: TritonContainer) -> None:
    """The per-version environment checks of the process-based suite, on the container's log."""
    log = triton_container.logs()
    assertions.check_environments_in_log(log)
    assert "/opt/tritongen/" not in "\n".join(line for line in log.splitlines() if "tritongen_textprep" in line)


def _exec(container: TritonContainer, script: str) -> str:
    code, output = container.container.exec(["bash", "-c", script])
    text = output.decode(errors="replace")
    assert code == 0, text
    return text


_STUB_PROCESSES = r"""
for proc in /proc/[0-9]*; do
    exe=$(readlink "$proc/exe" 2>/dev/null) || continue
    case "$exe" in
        *triton_python_backend_stub)
            args=$(tr '\0' ' ' < "$proc/cmdline")
            python=$(grep -o '[^ ]*libpython3[.0-9]*\.so[.0-9]*' "$proc/maps" | sort -u | head -1)
            echo "$exe|${args% }|$python";;
    esac
done
"""


def test_stand_in_has_nvidias_backend_folder(triton_container: TritonContainer) -> None:
    """`/opt/tritonserver/backends` holds exactly python, onnxruntime and pytorch; python3 is
    Python 3.10 and there is no Python 3.11 outside the runners' prefix."""
    if not stand_in_image():
        pytest.skip("checks the stand-in's own layout")
    listing = _exec(triton_container, "ls -R /opt/tritonserver/backends")
    print(listing)
    assert _exec(triton_container, "ls /opt/tritonserver/backends").split() == sorted(NVIDIA_BACKENDS)
    # (the stubs' imports leave a __pycache__ in python/, as on NVIDIA's image)
    assert _exec(triton_container, "ls -I __pycache__ /opt/tritonserver/backends/python").split() == [
        "libtriton_python.so",
        "triton_python_backend_stub",
        "triton_python_backend_utils.py",
    ]
    for runner in RUNNER_BACKENDS:
        assert "model.py" in _exec(triton_container, f"ls /opt/tritonserver/backends/{runner}").split()
    assert _exec(triton_container, "test -x /opt/tritonserver/bin/tritonserver && echo ok").strip() == "ok"
    assert _exec(triton_container, "python3 --version").startswith(f"Python {SYSTEM_PYTHON}.")
    assert (
        _exec(triton_container, "command -v python3.11 || ldconfig -p | grep -c libpython3.11 || true").strip() == "0"
    )


def test_stubs_of_the_served_repository(triton_container: TritonContainer, container_repository: Path) -> None:
    """In the running container: each preprocessing model runs the stub it ships, else NVIDIA's
    default 3.10 stub (never the runners'), with its environment's libpython; each runner runs
    the runners' 3.11 stub with the runners' libpython; no other stub runs."""
    if not stand_in_image():
        pytest.skip("inspects the stand-in's processes")
    lines = [line.split("|") for line in _exec(triton_container, _STUB_PROCESSES).splitlines() if line]
    print("\n".join("|".join(line) for line in lines))
    assert lines
    runner_dirs = {str(CONTAINER_TRITON_ROOT / "backends" / name) for name in RUNNER_BACKENDS}
    stubs = IMAGE_PYTRITON_ROOT / "python_backend_stubs"
    runner_stub = str(stubs / "3.11" / "triton_python_backend_stub")
    default_stub = str(stubs / SYSTEM_PYTHON / "triton_python_backend_stub")
    seen_runners, seen_models = set(), set()
    for exe, args, python in lines:
        runtime_dir = args.split()[-1]
        if runtime_dir in runner_dirs:
            assert exe == runner_stub, (exe, args)
            assert python.startswith("/opt/tritongen/python3.11/lib/libpython3.11.so"), python
            seen_runners.add(Path(runtime_dir).name)
            continue
        model = Path(args.split()[1]).parent.parent.name  # /models/<model>/<version>/model.py
        assert runtime_dir == "DEFAULT", args
        if (container_repository / model / "triton_python_backend_stub").exists():
            assert exe == f"{CONTAINER_REPOSITORY}/{model}/triton_python_backend_stub", (exe, args)
        else:
            assert exe == default_stub, (exe, args)
            assert f"libpython{SYSTEM_PYTHON}.so" in python, python
        assert not python.startswith("/opt/"), f"{model} runs the image's Python, not its environment's: {python}"
        seen_models.add(model)
    roles = {name: entry.role for name, entry in read_manifest(container_repository).models.items()}
    preprocessing = {m for m in repository_models(container_repository) if roles.get(m) == "preprocess"}
    assert seen_models == preprocessing
    assert seen_runners == set(RUNNER_BACKENDS)


# --- Hand-made models: what the python backend of NVIDIA's image does with them ---------------

PROBE_CODE = """
import json, sys
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        found = {}
        for name in ("numpy", "torch", "onnxruntime", "tokenizers", "tritongen_textprep"):
            try:
                found[name] = getattr(__import__(name), "__version__", "?")
            except ImportError:
                found[name] = None
        self.info = json.dumps({"python": sys.version.split()[0], "prefix": sys.prefix, "modules": found})

    def execute(self, requests):
        out = np.array([self.info.encode()], dtype=object)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("INFO", out)]) for _ in requests]
"""

SHIM_CODE = "from tritongen_textprep.triton_model import TritonPythonModel\n"
"""What `generate` writes as a preprocessing model's `1/model.py`."""


def _python_model(repository: Path, name: str, code: str, parameters: dict[str, str], probe: bool) -> Path:
    model = repository / name
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.py").write_text(code)
    if probe:
        tensors = (
            'input [{ name: "IN" data_type: TYPE_INT32 dims: [1] }]\n'
            'output [{ name: "INFO" data_type: TYPE_STRING dims: [1] }]\n'
        )
        batch = 0
    else:
        shutil.copy2(_tokenizer_file(), model / "1" / "tokenizer.json")
        tensors = (
            'input [{ name: "TEXT" data_type: TYPE_STRING dims: [1] }]\n'
            'output [{ name: "INPUT_IDS" data_type: TYPE_INT64 dims: [-1] },'
            ' { name: "ATTENTION_MASK" data_type: TYPE_INT64 dims: [-1] }]\n'
        )
        parameters = {"tokenizer_file": "tokenizer.json", "max_length": "32", **parameters}
        batch = 8
    text = f'name: "{name}"\nbackend: "python"\nmax_batch_size: {batch}\n{tensors}'
    text += "instance_group [{ kind: KIND_CPU count: 1 }]\n"
    for key, value in parameters.items():
        text += f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}\n'
    (model / "config.pbtxt").write_text(text)
    return model


def _probe(container: TritonContainer, model: str) -> dict[str, object]:
    body = json.dumps({"inputs": [{"name": "IN", "shape": [1], "datatype": "INT32", "data": [0]}]}).encode()
    request = urllib.request.Request(f"http://{container.http_url}/v2/models/{model}/infer", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        info: dict[str, object] = json.loads(json.loads(response.read())["outputs"][0]["data"][0])
    return info


def _load(container: TritonContainer, model: str, timeout_s: float = 60.0) -> tuple[int | None, str]:
    """Ask the server to load `model`; return the HTTP status and the message (None: no
    answer in time, e.g. a stub that cannot start leaves the load hanging)."""
    url = f"http://{container.http_url}/v2/repository/models/{model}/load"
    request = urllib.request.Request(url, data=b"{}", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except TimeoutError:
        return None, f"no answer after {timeout_s:.0f}s"


def _needs_stub(env: BuiltEnvironment) -> bool:
    """True when the environment's Python is not the one of NVIDIA's default stub."""
    return not env.python_version.startswith(f"{SYSTEM_PYTHON}.")


def _build_env(spec: Path, channels: list[str]) -> BuiltEnvironment:
    """Build an environment as `generate` does for the `ngc` target (with what its own stub
    needs when its Python is not the default stub's)."""
    python = parse_environment_spec(spec).python
    return build_environment(
        spec,
        channels=channels,
        target_python=PRODUCTION.name,
        cache_dir=PROJECT / "build" / "envs",
        progress=print,
        ship_stub=not python.startswith(SYSTEM_PYTHON),
    )


@pytest.fixture(scope="module")
def repository_envs(conda_channels: list[str]) -> dict[str, BuiltEnvironment]:
    """The preprocessing environments the repository ships (envs/*.yml), as `generate` builds them."""
    return {name: _build_env(spec_path_for(name), conda_channels) for name in TOKENIZER_VERSIONS}


@pytest.fixture(scope="module")
def env_311(conda_channels: list[str], tmp_path_factory: pytest.TempPathFactory) -> BuiltEnvironment:
    """textprep-tok023 on Python 3.11 (not NGC's stub Python), made to run with its own stub."""
    text = spec_path_for("textprep-tok023").read_text()
    spec = tmp_path_factory.mktemp("spec") / "textprep-tok023-py311.yml"
    spec.write_text(
        re.sub(r"(?m)^name: .*$", "name: textprep-tok023-py311", re.sub(r"python=3\.\d+", "python=3.11", text))
    )
    built = _build_env(spec, conda_channels)
    assert built.python_version.startswith("3.11."), built
    return built


@pytest.fixture(scope="module")
def probe_repository(
    repository_envs: dict[str, BuiltEnvironment], env_311: BuiltEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Python models as a repository may ship them, and ones NVIDIA's image rejects."""
    repository = tmp_path_factory.mktemp("probe") / "repository"
    shipped = repository_envs["textprep-tok023"]
    # A model.py without environment or stub; one in the repository's environment, with its
    # stub only if the environment needs one; one in a 3.11 environment with its 3.11 stub.
    _python_model(repository, "plain", PROBE_CODE, {}, probe=True)
    in_env = _python_model(repository, "in_env", PROBE_CODE, {}, probe=True)
    _configure_env(in_env, _place_env(repository, "in_env", shipped, unpacked=False))
    if _needs_stub(shipped):
        place_stub(in_env, shipped.python_version.rsplit(".", 1)[0])
    in_env_311 = _python_model(repository, "in_env_311", PROBE_CODE, {}, probe=True)
    _configure_env(in_env_311, _place_env(repository, "in_env_311", env_311, unpacked=True))
    place_stub(in_env_311, "3.11")
    # Rejected on NVIDIA's image: another backend name; a 3.11 environment without its stub
    # (NGC's default stub is 3.10); a 3.11 stub without an environment (NGC has no libpython3.11).
    bad_backend = _python_model(repository, "bad_backend", SHIM_CODE, {}, probe=False)
    config = bad_backend / "config.pbtxt"
    config.write_text(config.read_text().replace('backend: "python"', 'backend: "tritongen_textprep"'))
    no_stub = _python_model(repository, "env_without_stub", SHIM_CODE, {}, probe=False)
    _configure_env(no_stub, _place_env(repository, "env_without_stub", env_311, unpacked=True))
    no_env = _python_model(repository, "stub_without_env", PROBE_CODE, {}, probe=True)
    place_stub(no_env, "3.11")
    return repository


def _configure_env(model: Path, env_path: str) -> None:
    config = model / "config.pbtxt"
    value = f"$$TRITON_MODEL_DIRECTORY/{env_path}"
    config.write_text(
        config.read_text() + f'parameters {{ key: "EXECUTION_ENV_PATH" value: {{ string_value: "{value}" }} }}\n'
    )


@pytest.fixture(scope="module")
def probe_container(
    docker_engine: DockerEngine,  # noqa: F811
    triton_image: str,  # noqa: F811
    probe_repository: Path,
) -> Iterator[TritonContainer]:
    """The probe repository mounted read-only, as the deploy files mount a repository."""
    with run_triton_container(triton_image, probe_repository, models=["plain"]) as container:
        yield container


def test_python_model_without_its_own_stub_runs_python_3_10(probe_container: TritonContainer) -> None:
    """NGC 24.10's default stub embeds its system Python 3.10 (with numpy, nothing of ours)."""
    info = _probe(probe_container, "plain")
    print(f"plain: {info}")
    assert str(info["python"]).startswith(f"{SYSTEM_PYTHON}."), info
    modules = info["modules"]
    assert isinstance(modules, dict) and modules["numpy"] is not None
    assert all(modules[name] is None for name in ("torch", "onnxruntime", "tokenizers", "tritongen_textprep")), info


def test_model_in_the_repositorys_environment_runs_it(
    probe_container: TritonContainer, repository_envs: dict[str, BuiltEnvironment]
) -> None:
    """A model in the environment the repository ships, from the read-only mount (when the
    environment needs its own stub, a read-only mount rejects it: see the next test)."""
    env = repository_envs["textprep-tok023"]
    status, message = _load(probe_container, "in_env")
    if _needs_stub(env):
        assert status == 400 and "Failed to give execute permission" in message, message
        pytest.fail(f"the repository's environment is Python {env.python_version}: it needs its own stub")
    assert status == 200, message
    info = _probe(probe_container, "in_env")
    print(f"in_env: {info}")
    assert info["python"] == env.python_version, info
    modules = info["modules"]
    assert isinstance(modules, dict)
    assert modules["tokenizers"] == TOKENIZER_VERSIONS["textprep-tok023"] and modules["tritongen_textprep"], info
    assert modules["torch"] is None and modules["onnxruntime"] is None, info


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("bad_backend", "unable to find backend library for backend 'tritongen_textprep'"),
        # NGC's 3.10 stub starts with its own standard library; the 3.11 packages are not found.
        ("env_without_stub", "No module named 'tritongen_textprep'"),
        # The python backend (r24.10) chmods a model's own stub at every load: on a read-only
        # mount that fails, whatever the stub's mode already is.
        ("in_env_311", "Failed to give execute permission to triton_python_backend_stub"),
        ("stub_without_env", "Failed to give execute permission to triton_python_backend_stub"),
    ],
)
def test_what_nvidias_image_rejects_is_rejected(probe_container: TritonContainer, model: str, reason: str) -> None:
    started = time.monotonic()
    status, message = _load(probe_container, model)
    print(f"{model}: HTTP {status} after {time.monotonic() - started:.1f}s: {message[:300]}")
    assert status == 400, (status, message)
    assert reason in message, message
    assert _probe(probe_container, "plain")["python"], "the server stopped serving"


def test_model_with_a_311_environment_and_its_stub_runs_it_from_a_writable_folder(
    docker_engine: DockerEngine,  # noqa: F811
    triton_image: str,  # noqa: F811
    probe_repository: Path,
) -> None:
    """EXECUTION_ENV_PATH to a 3.11 environment + its 3.11 stub runs Python 3.11 with the
    environment's packages, where the model folder is writable (see the read-only case above)."""
    models = ["in_env_311"]
    with run_triton_container(triton_image, probe_repository, models=models, read_only=False) as container:
        info = _probe(container, "in_env_311")
        # Writable, a 3.11 stub without an environment still cannot start (the libraries it
        # needs, libcudart of the wheel and libpython3.11, come only with an environment made
        # for it); the python backend then waits for it, as on NVIDIA's image.
        status, message = _load(container, "stub_without_env", timeout_s=10)
        print(f"stub_without_env (writable): HTTP {status}: {message[:300]}")
        assert status != 200, message
        wait_until(
            lambda: "triton_python_backend_stub: error while loading shared libraries" in container.logs(),
            60,
            "the 3.11 stub's failure to start in the container's log",
        )
    print(f"in_env_311: {info}")
    assert str(info["python"]).startswith("3.11."), info
    assert "/opt/" not in str(info["prefix"]), info
    modules = info["modules"]
    assert isinstance(modules, dict)
    assert modules["tokenizers"] == TOKENIZER_VERSIONS["textprep-tok023"] and modules["tritongen_textprep"], info
    assert modules["torch"] is None and modules["onnxruntime"] is None, info


def test_two_versions_two_tokenizers_in_a_container(
    repository_envs: dict[str, BuiltEnvironment],
    docker_engine: DockerEngine,  # noqa: F811
    triton_image: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Per-version execution environments as the repository ships them (python backend, the
    generated shim, its environments and stubs): v1 (tokenizers 0.20, tarball) and v2
    (tokenizers 0.23, unpacked folder) of one model each run their own library, read-only
    unless an environment needs its own stub (which a read-only mount rejects)."""
    repository = tmp_path / "repository"
    layout = {"tok_v1_pre": ("textprep-tok020", False), "tok_v2_pre": ("textprep-tok023", True)}
    stubs = False
    for model, (name, unpacked) in layout.items():
        env = repository_envs[name]
        folder = _python_model(repository, model, SHIM_CODE, {}, probe=False)
        _configure_env(folder, _place_env(repository, model, env, unpacked))
        if _needs_stub(env):
            place_stub(folder, env.python_version.rsplit(".", 1)[0])
            stubs = True
    with run_triton_container(triton_image, repository, read_only=not stubs) as container:
        answers = {model: _infer(container, model, TEXTS) for model in layout}  # type: ignore[arg-type]
        log = container.logs()
    shutil.rmtree(repository, ignore_errors=True)
    for outputs in answers.values():
        _check_answer(outputs, TEXTS)
    for model, (name, _) in layout.items():
        lines = [line for line in log.splitlines() if "tritongen_textprep" in line and f"model={model} " in line]
        assert lines and all(f"tokenizers={TOKENIZER_VERSIONS[name]} " in line for line in lines), lines


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
            env={
                **os.environ,
                "TRITON_IMAGE": triton_image,
                ADMIN_KEY_VARIABLE: secrets.token_hex(24),
                **docker_engine.environment(),
            },
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
