"""`docker-run.sh`: valid shell with one `docker run` line, the right ports, mount, shm and image."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from generator.base.launch import ServerPorts
from generator.pipeline.deploy import render_deploy_files
from generator.pipeline.deploy.docker_run import docker_run_command
from generator.pipeline.deploy.launcher import CONTAINER_KEY_FILE, REFUSAL_EXIT_CODE, launch_arguments


def test_run_script_is_valid_shell_with_one_docker_run() -> None:
    text = render_deploy_files("../my repo")["docker-run.sh"]
    assert text.startswith("#!/bin/sh\n")
    assert text.count("docker run") == 1
    assert 'REPOSITORY="$(cd "$(dirname "$0")"/"../my repo" && pwd)"' in text
    assert '--mount "type=bind,source=$REPOSITORY,target=/models,readonly"' in text
    assert "--shm-size=256m" in text and "-p 8001:8001" in text
    assert "--env TRITONGEN_ADMIN_KEY --env TRITONGEN_ADMIN_OPEN" in text
    if shutil.which("sh"):
        subprocess.run(["sh", "-n"], input=text, text=True, check=True)


def test_absolute_repository_and_image_override() -> None:
    text = render_deploy_files("/srv/models$x", target="ngc", image="my/triton:1")["docker-run.sh"]
    assert 'REPOSITORY="/srv/models\\$x"' in text
    assert 'IMAGE="${TRITON_IMAGE:-my/triton:1}"' in text


def test_docker_run_command_list() -> None:
    command = docker_run_command("/abs/repo", ServerPorts(1, 2, 3), image="img", name=None, key_file="/s/key")
    assert command[:3] == ["docker", "run", "--rm"]
    assert command[4:6] == ["-p", "1:8000"]
    assert "type=bind,source=/abs/repo,target=/models,readonly" in command
    assert f"type=bind,source=/s/key,target={CONTAINER_KEY_FILE},readonly" in command
    assert command[command.index("img") + 1 :] == launch_arguments()


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX sh")
def test_run_script_refuses_an_unreadable_key_file(tmp_path: Path) -> None:
    script = tmp_path / "docker-run.sh"
    script.write_text(render_deploy_files(".")["docker-run.sh"])
    env = {"PATH": os.environ.get("PATH", ""), "TRITONGEN_ADMIN_KEY_FILE": str(tmp_path / "nope")}
    result = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == REFUSAL_EXIT_CODE and "cannot read the admin key file" in result.stderr
