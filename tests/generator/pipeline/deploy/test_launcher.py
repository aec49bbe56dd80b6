"""The container launcher: the admin APIs restricted with a key given at run time (the launcher
script, run here in `sh`), with exactly the restriction flags `tritongen serve` uses."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from generator.base.launch import RESTRICTED_APIS, ServerOptions, server_command
from generator.base.triton import TritonInstall
from generator.kinds.targets import TARGETS
from generator.pipeline.deploy.launcher import (
    LAUNCH_COMMAND,
    LAUNCHER,
    REFUSAL_EXIT_CODE,
    container_command,
    launch_arguments,
    restriction_flags,
)

KEY = "k3y-0f_the.operator~0123456789"


def test_restriction_flags_are_serves() -> None:
    options = ServerOptions(repository=Path("/models"), models=("m",), admin_key=KEY)
    serve = server_command(options, Path("/b"), TritonInstall(Path("/t")))
    assert [flag for flag in serve if "restricted" in flag] == restriction_flags(KEY)
    assert all(",".join(RESTRICTED_APIS) in flag for flag in restriction_flags(KEY))


def test_launch_arguments_run_the_targets_server() -> None:
    for target in TARGETS.values():
        arguments = launch_arguments(("m",), target=target)
        assert arguments == [*LAUNCH_COMMAND, *container_command(("m",), target=target)]
        assert arguments[len(LAUNCH_COMMAND)] == f"{target.triton_root}/bin/tritonserver"
        assert f"--backend-directory={target.triton_root}/backends" in arguments


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
