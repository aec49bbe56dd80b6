"""The local image's recipe: content-hash tag, rendered Dockerfile, mirror lookup (no Docker)."""

from __future__ import annotations

import shutil
from pathlib import Path

from generator.containers.image import (
    BaseSpec,
    container_command,
    debian_mirror,
    image_tag,
    inputs_hash,
    render_dockerfile,
)
from generator.serving.tritonserver import PYTHON_BACKENDS_DIR
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


def test_dockerfile_uses_the_base_and_the_shared_pieces() -> None:
    base = BaseSpec()
    text = render_dockerfile(base, "0123456789abcdef")
    assert f"FROM {base.tag} AS packages" in text
    assert "python3.11 -m generator.serving.tritonserver assemble /opt/tritonserver/backends" in text
    assert "--no-index" in text and "pip download" not in text
    assert '"--model-repository=/models"' in text
    assert "$" not in text.replace("$$", "").replace("${package}", "").replace("$package", "")


def test_container_command_is_nvidia_image_layout() -> None:
    command = container_command(["a", "b"])
    assert command[0] == "/opt/tritonserver/bin/tritonserver"
    assert "--backend-directory=/opt/tritonserver/backends" in command
    assert "--http-address=0.0.0.0" in command
    assert command[-2:] == ["--load-model=a", "--load-model=b"]


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
