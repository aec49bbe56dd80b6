"""bench.infinity: Infinity's venv (commands, pinned requirements, rebuild on change), its server and
export command lines, its offline environment and the pooling read from the model folder (no server)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import corpus, infinity
from bench.systems import BenchError


def test_the_venv_is_created_then_gets_the_cpu_torch_alone_then_the_pinned_rest(tmp_path: Path) -> None:
    venv, requirements = tmp_path / "venv", tmp_path / "requirements.txt"
    create, torch, rest = infinity.install_commands(venv, requirements)
    assert create == [sys.executable, "-m", "venv", "--clear", str(venv)]
    python = str(venv / "bin" / "python")
    assert torch == [python, "-m", "pip", "install", "--progress-bar", "off", "torch==2.13.0"]
    assert rest == [python, "-m", "pip", "install", "--progress-bar", "off", "-r", str(requirements)]


def test_the_requirements_pin_every_package_and_torch_to_the_cpu_wheels_version() -> None:
    lines = [
        line.strip()
        for line in infinity.REQUIREMENTS.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    unpinned = [line for line in lines if not re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.]+", line)]
    assert unpinned == []
    names = {line.split("==")[0].lower().replace("_", "-"): line for line in lines}
    assert names["torch"] == infinity.TORCH  # the version of the wheel on disk, no local label
    assert names["infinity-emb"] == "infinity_emb==0.0.78"
    for needed in ("optimum", "optimum-onnx", "onnxruntime", "sentence-transformers", "uvicorn", "fastapi"):
        assert needed in names
    assert not [name for name in names if name.startswith("nvidia-")]  # no CUDA libraries


def test_run_logged_passes_on_pips_progress_lines_as_they_come() -> None:
    script = "print('Collecting torch==2.13.0'); print('  Using cached x.whl'); print('Successfully installed a-1')"
    messages: list[str] = []
    returncode, output = infinity.run_logged([sys.executable, "-c", script], messages.append)
    assert returncode == 0
    assert output == ["Collecting torch==2.13.0", "  Using cached x.whl", "Successfully installed a-1"]
    assert messages == ["    Collecting torch==2.13.0", "    Successfully installed a-1"]
    assert infinity.run_logged([sys.executable, "-c", "raise SystemExit(3)"], messages.append) == (3, [])


def _fake_pip(calls: list[list[str]], returncode: int = 0) -> Any:
    """A stand-in for `run_logged`: creates the venv's python for `-m venv`, answers `returncode`."""

    def run(command: list[str], log: Any) -> tuple[int, list[str]]:
        calls.append(command)
        if command[1:3] == ["-m", "venv"]:
            (Path(command[-1]) / "bin").mkdir(parents=True, exist_ok=True)
            (Path(command[-1]) / "bin" / "python").touch()
        log("    Successfully installed a-1 b-2")
        return returncode, ["Successfully installed a-1 b-2"]

    return run


def test_ensure_venv_builds_once_and_again_when_the_requirements_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv, requirements = tmp_path / "venv", tmp_path / "requirements.txt"
    requirements.write_text("infinity_emb==0.0.78\n", encoding="utf-8")
    calls: list[list[str]] = []
    monkeypatch.setattr(infinity, "run_logged", _fake_pip(calls))
    messages: list[str] = []
    python = infinity.ensure_venv(messages.append, venv, requirements)
    assert python == venv / "bin" / "python"
    assert calls == infinity.install_commands(venv, requirements)
    assert any("building Infinity's venv" in m for m in messages) and any("Successfully" in m for m in messages)

    calls.clear()
    assert infinity.ensure_venv(messages.append, venv, requirements) == python
    assert calls == []  # built from these requirements already

    requirements.write_text("infinity_emb==0.0.77\n", encoding="utf-8")
    infinity.ensure_venv(messages.append, venv, requirements)
    assert calls == infinity.install_commands(venv, requirements)


def test_ensure_venv_failure_names_the_command_and_leaves_no_marker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv, requirements = tmp_path / "venv", tmp_path / "requirements.txt"
    requirements.write_text("infinity_emb==0.0.78\n", encoding="utf-8")
    calls: list[list[str]] = []
    monkeypatch.setattr(infinity, "run_logged", _fake_pip(calls, returncode=1))
    with pytest.raises(BenchError, match="building Infinity's venv failed .*-m venv"):
        infinity.ensure_venv(lambda _: None, venv, requirements)
    assert not (venv / infinity.MARKER).exists()


def test_server_command_serves_the_folder_offline_on_cpu_with_batches_of_32(tmp_path: Path) -> None:
    python = tmp_path / "python"
    command = infinity.server_command(python, "optimum", 8123, ".")
    assert command[:4] == [str(python), "-m", "infinity_emb.cli", "v2"]
    options = dict(zip(command[4::2], command[5::2], strict=True))
    assert options == {
        "--model-id": ".",
        "--served-model-name": infinity.MODEL_NAME,
        "--engine": "optimum",
        "--device": "cpu",
        "--batch-size": "32",
        "--pooling-method": "mean",  # all-MiniLM-L6-v2's 1_Pooling
        "--host": "127.0.0.1",
        "--port": "8123",
        "--log-level": "warning",
    }
    assert infinity.server_command(python, "torch", 8123, "/m")[4:6] == ["--model-id", "/m"]
    with pytest.raises(ValueError, match="'ctranslate2' is not one of optimum, torch"):
        infinity.server_command(python, "ctranslate2", 8123, ".")


def test_export_command_writes_the_encoders_hidden_states(tmp_path: Path) -> None:
    command = infinity.export_command(tmp_path / "python", tmp_path / "out")
    assert command[1:5] == ["-m", "optimum.commands.optimum_cli", "export", "onnx"]
    options = dict(zip(command[5:-1:2], command[6:-1:2], strict=True))
    assert options == {
        "--model": str(corpus.model_dir()),
        "--task": "feature-extraction",
        "--library-name": "transformers",
    }
    assert command[-1] == str(tmp_path / "out")


def test_offline_env_forbids_downloads_and_telemetry(tmp_path: Path) -> None:
    env = infinity.offline_env(tmp_path)
    assert env["HF_HUB_OFFLINE"] == env["TRANSFORMERS_OFFLINE"] == env["DO_NOT_TRACK"] == "1"
    assert env["INFINITY_ANONYMOUS_USAGE_STATS"] == "0"
    assert env["HF_HOME"] == str(tmp_path / "infinity-hf")
    assert "OMP_NUM_THREADS" not in env  # the server picks its threads, like the other baselines


@pytest.mark.parametrize(
    ("config", "method"),
    [({"pooling_mode_mean_tokens": True}, "mean"), ({"pooling_mode_cls_token": True}, "cls")],
)
def test_pooling_method_is_the_folders(tmp_path: Path, config: dict[str, bool], method: str) -> None:
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(config), encoding="utf-8")
    assert infinity.pooling_method(tmp_path) == method


def test_pooling_method_infinity_cannot_do_is_refused(tmp_path: Path) -> None:
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text('{"pooling_mode_max_tokens": true}', encoding="utf-8")
    with pytest.raises(BenchError, match="mean or \\[CLS\\] only"):
        infinity.pooling_method(tmp_path)
