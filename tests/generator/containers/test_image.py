"""The stand-in image's recipe: tag, Dockerfile, stub dispatcher, build inputs (no Docker)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from generator import PROJECT_ROOT
from generator.base.triton import PYTHON_BACKENDS_DIR, assemble_backend_directory
from generator.containers.image import (
    IMAGE_MODULES,
    IMAGE_THIRD_PARTY_IMPORTS,
    NVIDIA_BACKENDS,
    RUNNER_BACKENDS,
    RUNNER_PREFIX,
    SYSTEM_PYTHON,
    BaseSpec,
    debian_mirror,
    image_tag,
    inputs_hash,
    render_dockerfile,
    render_stub_dispatcher,
    unpack_python_package,
)
from generator.environments.channel import write_conda_package
from generator.pipeline.deploy.launcher import container_command
from tests.dockerd import docker_answers


def test_tag_is_stable_and_follows_the_backends(tmp_path: Path) -> None:
    backends = tmp_path / "triton"
    shutil.copytree(PYTHON_BACKENDS_DIR, backends)
    first = inputs_hash(python_backends=backends)
    assert first == inputs_hash(python_backends=backends)
    cache = backends / "x" / "__pycache__"
    cache.mkdir(parents=True)
    (cache / "model.cpython-311.pyc").write_bytes(b"ignored")
    assert inputs_hash(python_backends=backends) == first
    (backends / "x" / "model.py").write_text("# changed\n")
    assert inputs_hash(python_backends=backends) != first
    assert image_tag(python_backends=backends).startswith("tritongen-triton:")


def test_base_tag_follows_its_packages() -> None:
    assert BaseSpec().tag.startswith("tritongen-base:bookworm-")
    assert BaseSpec(packages=("python3.11",)).tag != BaseSpec().tag


def test_dockerfile_builds_the_ngc_layout() -> None:
    base = BaseSpec()
    text = render_dockerfile(base, "0123456789abcdef")
    assert f"FROM {base.tag} AS packages" in text
    assert "-m generator.base.triton assemble /opt/tritonserver/backends" in text
    assert "--backend=onnxruntime --backend=pytorch --stub=triton_python_backend_stub" in text
    # The build fails unless the backend folder holds exactly NVIDIA's three backends.
    assert """test "$(ls /opt/tritonserver/backends | tr '\\n' ' ')" = "onnxruntime python pytorch \"""" in text
    # Debian's Python 3.11 (and libpython3.11) leave the final image; python3 is 3.10.
    assert "apt-get purge" in text and "! ldconfig -p | grep -q libpython3.11" in text
    assert "ln -s python3.10 /usr/local/bin/python3" in text
    assert "--no-index" in text and "pip download" not in text
    assert "OMP_NUM_THREADS" not in text.split("FROM", 2)[2]  # NVIDIA's image sets no thread pools
    assert '"--model-repository=/models"' in text
    assert "$" not in text.replace("$(", "").replace("$$", "")


def test_container_command_is_nvidia_image_layout() -> None:
    command = container_command(["a", "b"])
    assert command[0] == "/opt/tritonserver/bin/tritonserver"
    assert "--backend-directory=/opt/tritonserver/backends" in command
    assert "--http-address=0.0.0.0" in command
    assert command[-2:] == ["--load-model=a", "--load-model=b"]


def _fake_stub(path: Path, name: str) -> Path:
    """A stub that prints which one it is, its arguments and the PATH it got."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "{name} $# ${{PATH%%:*}} $OMP_NUM_THREADS"\n')
    path.chmod(0o755)
    return path


@pytest.fixture
def dispatching_backends(tmp_path: Path) -> Path:
    """A backend folder whose python/ stub is the image's dispatcher over two fake stubs."""
    default = _fake_stub(tmp_path / "stubs" / "3.10" / "stub", "default")
    runner = _fake_stub(tmp_path / "stubs" / "3.11" / "stub", "runner")
    dispatcher = tmp_path / "dispatcher"
    dispatcher.write_text(render_stub_dispatcher(default, runner, tmp_path / "prefix"))
    backends = tmp_path / "backends"
    assemble_backend_directory(backends, backends=RUNNER_BACKENDS, stub=dispatcher)
    return backends


def _dispatch(backends: Path, *args: str) -> str:
    stub = backends / "python" / "triton_python_backend_stub"
    env = {"PATH": os.environ["PATH"], "OMP_NUM_THREADS": "-"}
    return subprocess.run(
        ["bash", "-c", f"exec {stub} " + " ".join(args)], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


def _stub_args(runtime_model_dir: str) -> list[str]:
    return ["/models/m/1/model.py", "shm", "1048576", "1048576", "42", "/b/python", "336", "m_0", runtime_model_dir]


def test_backend_folder_is_exactly_nvidias(dispatching_backends: Path) -> None:
    assert sorted(p.name for p in dispatching_backends.iterdir()) == sorted(NVIDIA_BACKENDS)
    python = dispatching_backends / "python"
    assert sorted(p.name for p in python.iterdir()) == [
        "libtriton_python.so",
        "triton_python_backend_stub",
        "triton_python_backend_utils.py",
    ]
    for runner in RUNNER_BACKENDS:
        assert (dispatching_backends / runner / "model.py").is_file()


def test_dispatcher_gives_python_models_the_system_stub(dispatching_backends: Path, tmp_path: Path) -> None:
    """A model.py model (runtime dir DEFAULT), the stub's argument-less probe and any folder
    that is not one of the runner folders get the Python 3.10 stub, with the PATH unchanged."""
    path_head = os.environ["PATH"].split(":")[0]
    assert _dispatch(dispatching_backends, *_stub_args("DEFAULT")) == f"default 9 {path_head} -"
    assert _dispatch(dispatching_backends) == f"default 0 {path_head} -"
    (tmp_path / "elsewhere" / "onnxruntime").mkdir(parents=True)
    other = str(tmp_path / "elsewhere" / "onnxruntime")
    assert _dispatch(dispatching_backends, *_stub_args(other)).startswith("default 9 ")
    (dispatching_backends / "tritongen_textprep").mkdir()
    not_nvidia = str(dispatching_backends / "tritongen_textprep")
    assert _dispatch(dispatching_backends, *_stub_args(not_nvidia)).startswith("default 9 ")


@pytest.mark.parametrize("runner", RUNNER_BACKENDS)
def test_dispatcher_gives_the_runners_their_stub(dispatching_backends: Path, tmp_path: Path, runner: str) -> None:
    expected = f"runner 9 {tmp_path / 'prefix' / 'bin'} 1"
    assert _dispatch(dispatching_backends, *_stub_args(str(dispatching_backends / runner))) == expected
    spelled_otherwise = f"{dispatching_backends}/python/../{runner}"  # same folder, other path
    assert _dispatch(dispatching_backends, *_stub_args(spelled_otherwise)) == expected


def test_image_dispatcher_names_the_image_paths() -> None:
    text = render_stub_dispatcher()
    assert f"python_backend_stubs/{SYSTEM_PYTHON}/triton_python_backend_stub" in text
    assert f'export PATH="{RUNNER_PREFIX}/bin:$PATH"' in text
    assert "@" not in text.replace("$@", "")


def test_image_modules_import_only_the_standard_library_and_each_other() -> None:
    """The image build runs IMAGE_MODULES alone (not the installed package): any other import
    would break the build, so it is caught here first."""
    shipped = {module.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for module in IMAGE_MODULES}
    allowed = set(sys.stdlib_module_names) | {"__future__"} | set(IMAGE_THIRD_PARTY_IMPORTS)
    wrong = []
    for module in IMAGE_MODULES:
        tree = ast.parse((PROJECT_ROOT / module).read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                if name not in shipped and name.split(".")[0] not in allowed:
                    wrong.append(f"{module}: import {name}")
    assert not wrong, wrong


def test_python_package_unpacks_with_its_prefix_rewritten(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "lib").mkdir()
    (root / "lib" / "config.py").write_text("PREFIX = '/old/prefix'\n")
    (root / "bin" / "tool").write_bytes(b"\x7fELF no placeholder")
    package = write_conda_package(
        root, name="python", version="3.10.1", build="0", depends=[], output_dir=tmp_path, placeholder="/old/prefix"
    )
    unpacked = unpack_python_package(package, tmp_path / "out", Path("/opt/python3.10"))
    assert (unpacked / "lib" / "config.py").read_text() == "PREFIX = '/opt/python3.10'\n"
    assert (unpacked / "bin" / "tool").read_bytes() == b"\x7fELF no placeholder"


def test_debian_mirror_from_deb822_and_one_line_lists(tmp_path: Path) -> None:
    deb822 = tmp_path / "a"
    (deb822 / "sources.list.d").mkdir(parents=True)
    (deb822 / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\n# comment: here\nURIs: http://mirror.example/debian\nSuites: bookworm\n"
    )
    assert debian_mirror([deb822]) == "http://mirror.example/debian"
    one_line = tmp_path / "b"
    (one_line / "sources.list.d").mkdir(parents=True)
    (one_line / "sources.list").write_text("# x\ndeb [signed-by=/k.gpg] http://other.example/debian bookworm main\n")
    assert debian_mirror([one_line]) == "http://other.example/debian"


def test_docker_answers_is_false_without_a_socket(tmp_path: Path) -> None:
    assert not docker_answers(f"unix://{tmp_path / 'missing.sock'}")
