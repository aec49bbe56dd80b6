"""Infinity (`infinity-emb`), the embedding server a user would pick, as a benchmarked system.

It runs from its own virtual environment (`build/bench-venvs/infinity`, created on first use from
`bench/requirements-infinity.txt`: the CPU torch wheel first, then the pinned rest), served offline
from the bench's model folder (`bench.corpus.model_dir()`), one engine per configuration:
`optimum` (ONNX Runtime, on optimum's ONNX export of the folder: `onnx_folder`) or `torch`,
batch size 32, on CPU, on a free loopback port. The load
generator posts its OpenAI-style body (`loadgen.openai_body`) to `/embeddings`.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from generator.serving.ports import free_ports

from .corpus import model_dir
from .systems import PROJECT_ROOT, BenchError, Running, _baseline_env, stop

REQUIREMENTS = PROJECT_ROOT / "bench" / "requirements-infinity.txt"
VENV = PROJECT_ROOT / "build" / "bench-venvs" / "infinity"
TORCH = "torch==2.13.0"
"""Installed first and alone: pip then takes the CPU wheel on disk, never a CUDA build."""
ENGINES = ("optimum", "torch")
MODEL_NAME = "minilm"
"""The served model name (`--served-model-name`), the `model` of every request body."""
BATCH_SIZE = 32
MARKER = ".requirements-sha256"
"""File in the venv holding the hash of the requirements it was built from."""


def requirements_hash(requirements: Path = REQUIREMENTS) -> str:
    return hashlib.sha256(requirements.read_bytes()).hexdigest()


def install_commands(venv: Path, requirements: Path = REQUIREMENTS) -> list[list[str]]:
    """The commands that build the venv: create it, the CPU torch wheel alone, then the pinned rest."""
    python = str(venv / "bin" / "python")
    return [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [python, "-m", "pip", "install", "--progress-bar", "off", TORCH],
        [python, "-m", "pip", "install", "--progress-bar", "off", "-r", str(requirements)],
    ]


PROGRESS = ("Collecting ", "Installing collected packages", "Successfully installed")
"""pip's output lines `run_logged` passes on as they come (one per package, then the summary)."""


def run_logged(command: list[str], log: Callable[[str], None]) -> tuple[int, list[str]]:
    """Run `command`, passing its progress lines to `log` as they come; its exit code and output."""
    output: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line.rstrip("\n"))
            if line.startswith(PROGRESS):
                log(f"    {output[-1][:160]}")
    return process.returncode, output


def ensure_venv(log: Callable[[str], None], venv: Path = VENV, requirements: Path = REQUIREMENTS) -> Path:
    """The venv's Python, building the venv first when it is missing or its requirements changed."""
    python = venv / "bin" / "python"
    marker = venv / MARKER
    wanted = requirements_hash(requirements)
    if python.exists() and marker.exists() and marker.read_text(encoding="utf-8").strip() == wanted:
        return python
    log(f"building Infinity's venv {venv} from {requirements.name} (first use: a few minutes)")
    began = time.monotonic()
    for command in install_commands(venv, requirements):
        step = time.monotonic()
        log(f"  $ {' '.join(command)}")
        returncode, output = run_logged(command, log)
        if returncode != 0:
            tail = "\n".join(output[-40:])
            raise BenchError(f"building Infinity's venv failed ({' '.join(command)}):\n{tail}")
        log(f"  done in {time.monotonic() - step:.0f} s")
    marker.write_text(wanted + "\n", encoding="utf-8")
    log(f"Infinity's venv ready in {time.monotonic() - began:.0f} s")
    return python


def export_command(python: Path, folder: Path) -> list[str]:
    """optimum's ONNX export of the bench's model folder (feature extraction: the encoder's hidden
    states; Infinity pools them) into `folder`."""
    return [
        str(python),
        "-m",
        "optimum.commands.optimum_cli",
        "export",
        "onnx",
        "--model",
        str(model_dir()),
        "--task",
        "feature-extraction",
        "--library-name",
        "transformers",  # the encoder's `last_hidden_state`, which Infinity pools (not sentence-transformers' outputs)
        str(folder),
    ]


def onnx_folder(python: Path, workdir: Path, log: Callable[[str], None]) -> Path:
    """The model folder for Infinity's `optimum` engine, which serves only a folder holding an ONNX
    file: optimum's export of the bench's folder, beside links to its sentence-transformers files."""
    folder = workdir / "infinity-onnx"
    if (folder / "model.onnx").exists():
        return folder
    log(f"exporting the model to ONNX for Infinity's optimum engine ({folder})")
    began = time.monotonic()
    result = subprocess.run(
        export_command(python, folder),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=offline_env(workdir),
        check=False,
    )
    if result.returncode != 0 or not (folder / "model.onnx").exists():
        raise BenchError(f"optimum's ONNX export failed ({result.returncode}):\n{result.stdout[-3000:]}")
    for source in model_dir().iterdir():
        target = folder / source.name
        if not target.exists() and source.suffix not in {".safetensors", ".bin"}:
            target.symlink_to(source)
    log(f"ONNX export done in {time.monotonic() - began:.0f} s")
    return folder


def pooling_method(folder: Path | None = None) -> str:
    """The sentence-transformers folder's pooling (`1_Pooling/config.json`) as Infinity names it.

    Passed explicitly: with `auto`, Infinity's optimum engine pools the [CLS] token whatever the
    folder says (embeddings unlike sentence-transformers')."""
    config = json.loads(((folder or model_dir()) / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
    for key, method in (("pooling_mode_mean_tokens", "mean"), ("pooling_mode_cls_token", "cls")):
        if config.get(key):
            return method
    raise BenchError(f"Infinity pools by mean or [CLS] only; the model folder asks for {config}")


def server_command(python: Path, engine: str, port: int, model: str, batch_size: int = BATCH_SIZE) -> list[str]:
    """`infinity_emb v2` serving the model folder `model` with `engine` on CPU."""
    if engine not in ENGINES:
        raise ValueError(f"Infinity engine {engine!r} is not one of {', '.join(ENGINES)}")
    return [
        str(python),
        "-m",
        "infinity_emb.cli",
        "v2",
        "--model-id",
        str(model),
        "--served-model-name",
        MODEL_NAME,
        "--engine",
        engine,
        "--device",
        "cpu",
        "--batch-size",
        str(batch_size),
        "--pooling-method",
        pooling_method(),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",  # no access line per request (the other servers log none either)
    ]


def offline_env(workdir: Path) -> dict[str, str]:
    """The server's environment: the baselines' (no thread caps), offline, caches in the work folder."""
    return _baseline_env(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_HOME": str(workdir / "infinity-hf"),
            "INFINITY_ANONYMOUS_USAGE_STATS": "0",
            "DO_NOT_TRACK": "1",
        }
    )


def wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 600.0) -> None:
    """Poll `url/health` until it answers 200; fail with the log's tail when the server exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
            raise BenchError(f"Infinity exited with code {process.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.5)
    raise BenchError(f"Infinity at {url}: not healthy within {timeout_s:.0f} s (log: {log})")


def start_infinity(workdir: Path, engine: str, log: Callable[[str], None]) -> Running:
    """Infinity serving the model with `engine`, healthy; its process tree is the system's."""
    python = ensure_venv(log)
    if engine == "optimum":
        # Served as `.` from inside the folder: Infinity names the ONNX file by the path it found,
        # which optimum 2 resolves relative to the folder (an absolute folder is not found).
        model, cwd = ".", onnx_folder(python, workdir, log)
    else:
        model, cwd = str(model_dir()), PROJECT_ROOT
    port = free_ports(1)[0]
    server_log = workdir / f"infinity-{engine}.log"
    with server_log.open("ab") as handle:
        process = subprocess.Popen(
            server_command(python, engine, port, model),
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=offline_env(workdir),
            cwd=cwd,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    running = Running(
        "Infinity",
        f"infinity-emb engine {engine}, batch {BATCH_SIZE}, cpu",
        url,
        roots=[process.pid],
        processes=[process],
    )
    try:
        wait_healthy(url, process, server_log)
    except BaseException:
        stop(running)
        raise
    return running
