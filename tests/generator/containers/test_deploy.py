"""Deploy files: deterministic, valid YAML/shell, the right ports, mount, shm and command, and
the admin APIs restricted with a key given at run time (the launcher script, run here in `sh`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from generator.containers.deploy import (
    CONTAINER_KEY_FILE,
    LAUNCH_COMMAND,
    LAUNCHER,
    REFUSAL_EXIT_CODE,
    docker_run_command,
    launch_arguments,
    render_deploy_files,
    restriction_flags,
)
from generator.containers.image import LATEST_TAG, NGC_IMAGE, container_command
from generator.serving.tritonserver import RESTRICTED_APIS, ServerOptions, ServerPorts, TritonInstall, server_command

KEY = "k3y-0f_the.operator~0123456789"


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
    # Compose interpolates `$` in every value: the launcher's are doubled, nothing else differs.
    command = [argument.replace("$$", "$") for argument in service["command"]]
    assert command == launch_arguments() == [*LAUNCH_COMMAND, *container_command()]
    assert "--model-control-mode=explicit" in command
    assert service["environment"] == ["TRITONGEN_ADMIN_KEY", "TRITONGEN_ADMIN_KEY_FILE", "TRITONGEN_ADMIN_OPEN"]
    assert "entrypoint" not in service  # the image's entrypoint is kept (NVIDIA's sets up CUDA)


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


def test_no_key_value_in_generated_files() -> None:
    """The files name where the key comes from, never a key (serve's restriction flags appear
    only with the shell variable the launcher fills at run time)."""
    for target in ("local", "ngc"):
        for text in render_deploy_files(".", target=target).values():  # type: ignore[arg-type]
            assert text.count("admin-key=$key") == 2 or text.count("admin-key=$$key") == 2
            assert "admin-key=" not in text.replace("admin-key=$$key", "").replace("admin-key=$key", "")


def test_restriction_flags_are_serves() -> None:
    options = ServerOptions(repository=Path("/models"), models=("m",), admin_key=KEY)
    serve = server_command(options, Path("/b"), TritonInstall(Path("/t")))
    assert [flag for flag in serve if "restricted" in flag] == restriction_flags(KEY)
    assert all(",".join(RESTRICTED_APIS) in flag for flag in restriction_flags(KEY))


def test_launcher_has_no_kubernetes_expansion() -> None:
    assert "$(" not in LAUNCHER  # kubelet expands $(NAME) in a container's command and args


needs_sh = pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX sh")


def _launch(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The launcher with a stand-in server that prints its arguments and its environment."""
    server = ["sh", "-c", 'printf "arg:%s\\n" "$@"; env', "server", "--model-repository=/models"]
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    return subprocess.run(["sh", "-c", LAUNCHER, "tritongen-launch", *server], env={**base, **env}, text=True,
                          capture_output=True, timeout=30)  # fmt: skip


def _args(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line.removeprefix("arg:") for line in result.stdout.splitlines() if line.startswith("arg:")]


@needs_sh
def test_launcher_restricts_with_the_key_from_the_environment() -> None:
    result = _launch({"TRITONGEN_ADMIN_KEY": KEY})
    assert result.returncode == 0, result.stderr
    assert _args(result) == ["--model-repository=/models", *restriction_flags(KEY)]
    assert KEY not in result.stdout.split("arg:")[-1].split("\n", 1)[1]  # not in the server's environment


@needs_sh
def test_launcher_reads_the_key_file(tmp_path: Path) -> None:
    secret = tmp_path / "admin-key"
    secret.write_text(KEY + "\n")
    result = _launch({"TRITONGEN_ADMIN_KEY_FILE": str(secret)})
    assert result.returncode == 0, result.stderr
    assert _args(result)[1:] == restriction_flags(KEY)
    assert "TRITONGEN_ADMIN_KEY_FILE" not in result.stdout


@needs_sh
def test_launcher_refuses_without_a_key() -> None:
    result = _launch({})
    assert result.returncode == REFUSAL_EXIT_CODE and result.stdout == ""
    message = result.stderr
    assert "refusing to start" in message
    for variable in ("TRITONGEN_ADMIN_KEY", "TRITONGEN_ADMIN_KEY_FILE", "TRITONGEN_ADMIN_OPEN=1"):
        assert variable in message


@needs_sh
def test_launcher_opt_out_is_explicit() -> None:
    result = _launch({"TRITONGEN_ADMIN_OPEN": "1"})
    assert result.returncode == 0 and _args(result) == ["--model-repository=/models"]
    assert "OPEN to every client" in result.stderr
    assert _launch({"TRITONGEN_ADMIN_OPEN": "yes"}).returncode == REFUSAL_EXIT_CODE


@needs_sh
@pytest.mark.parametrize("bad", ["short", "has space in it, long enough", "comma,colon:equals=key-xxxxxxxx", "x" * 257])
def test_launcher_rejects_unusable_keys(bad: str) -> None:
    result = _launch({"TRITONGEN_ADMIN_KEY": bad})
    assert result.returncode == REFUSAL_EXIT_CODE and "16-256 characters" in result.stderr


@needs_sh
def test_launcher_unreadable_key_file(tmp_path: Path) -> None:
    result = _launch({"TRITONGEN_ADMIN_KEY_FILE": str(tmp_path / "missing")})
    assert result.returncode == REFUSAL_EXIT_CODE and "cannot read" in result.stderr


@needs_sh
def test_run_script_refuses_an_unreadable_key_file(tmp_path: Path) -> None:
    script = tmp_path / "docker-run.sh"
    script.write_text(render_deploy_files(".")["docker-run.sh"])
    env = {"PATH": os.environ.get("PATH", ""), "TRITONGEN_ADMIN_KEY_FILE": str(tmp_path / "nope")}
    result = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == REFUSAL_EXIT_CODE and "cannot read the admin key file" in result.stderr
