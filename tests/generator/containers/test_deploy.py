"""Deploy files: deterministic, valid YAML/shell, the right ports, mount, shm and command."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from generator.containers.deploy import docker_run_command, render_deploy_files
from generator.containers.image import LATEST_TAG, NGC_IMAGE, container_command
from generator.serving.tritonserver import ServerPorts


def test_output_is_deterministic() -> None:
    assert render_deploy_files("../repository") == render_deploy_files("../repository")
    assert set(render_deploy_files("../repository")) == {"docker-compose.yml", "docker-run.sh"}


@pytest.mark.parametrize(("target", "image"), [("local", LATEST_TAG), ("ngc", NGC_IMAGE)])
def test_compose_file(target: str, image: str) -> None:
    text = render_deploy_files("../repository", ServerPorts(9000, 9001, 9002), target)[  # type: ignore[arg-type]
        "docker-compose.yml"
    ]
    service = yaml.safe_load(text)["services"]["triton"]
    assert service["image"] == "${TRITON_IMAGE:-" + image + "}"
    assert service["ports"] == ["9000:8000", "9001:8001", "9002:8002"]
    assert service["shm_size"] == "256m"
    assert service["volumes"] == [{"type": "bind", "source": "../repository", "target": "/models", "read_only": True}]
    assert service["command"] == container_command()
    assert "--model-control-mode=explicit" in service["command"]


def test_run_script_is_valid_shell_with_one_docker_run() -> None:
    text = render_deploy_files("../my repo")["docker-run.sh"]
    assert text.startswith("#!/bin/sh\n")
    assert text.count("docker run") == 1
    assert 'REPOSITORY="$(cd "$(dirname "$0")"/"../my repo" && pwd)"' in text
    assert '--mount "type=bind,source=$REPOSITORY,target=/models,readonly"' in text
    assert "--shm-size=256m" in text and "-p 8001:8001" in text
    if shutil.which("sh"):
        subprocess.run(["sh", "-n"], input=text, text=True, check=True)


def test_absolute_repository_and_image_override() -> None:
    text = render_deploy_files("/srv/models$x", target="ngc", image="my/triton:1")["docker-run.sh"]
    assert 'REPOSITORY="/srv/models\\$x"' in text
    assert 'IMAGE="${TRITON_IMAGE:-my/triton:1}"' in text


def test_docker_run_command_list() -> None:
    command = docker_run_command("/abs/repo", ServerPorts(1, 2, 3), image="img", name=None)
    assert command[:3] == ["docker", "run", "--rm"]
    assert command[4:6] == ["-p", "1:8000"]
    assert "type=bind,source=/abs/repo,target=/models,readonly" in command
    assert command[command.index("img") + 1 :] == container_command()
