"""Start and stop the benchmarked servers (S1-S4, T) as process trees on loopback ports."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from generator.base.launch import ServerOptions, ServerPorts
from generator.pipeline.generate import GenerateOptions, generate
from generator.pipeline.manifest import read_manifest
from generator.pipeline.plan import TRITON_VERSION_DIR
from generator.serving.ports import free_ports
from generator.serving.process import TritonProcess, start_server

from .corpus import model_dir, tokenizer_file

PROJECT_ROOT = Path(__file__).resolve().parent.parent
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS")


class BenchError(RuntimeError):
    """A server did not start or answered wrongly."""


@dataclass
class Running:
    """A started system: where to send load, and the process trees that serve it."""

    name: str
    setting: str
    http_url: str | None = None
    """Base URL for wrk (`http://127.0.0.1:PORT`)."""
    grpc_url: str | None = None
    roots: list[int] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    triton: TritonProcess | None = None
    stats_model: str | None = None
    """The Triton inference model whose statistics give the cell's average batch size."""
    variant: str = ""
    """The S4 spec variant (`padded`, `buckets`, `ragged`, `tuned`); empty for other systems."""


def spec_dict(name: str) -> dict:  # type: ignore[type-arg]
    """A shipped spec (models/<name>.yaml) as a plain dict, to derive variants from."""
    return yaml.safe_load((PROJECT_ROOT / "models" / f"{name}.yaml").read_text(encoding="utf-8"))


def make_repository(workdir: Path, specs: Sequence[dict], cores: int) -> Path:  # type: ignore[type-arg]
    """Write spec variants to `workdir/specs` and generate `workdir/repository` from them."""
    specs_dir = workdir / "specs"
    if specs_dir.exists():
        for old in specs_dir.glob("*.yaml"):
            old.unlink()
    specs_dir.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        (specs_dir / f"{spec['name']}.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    output = workdir / "repository"
    try:
        generate(GenerateOptions(specs_dir=specs_dir, output=output, cores=cores, progress=lambda _: None))
    except Exception as error:  # noqa: BLE001 - any environment build failure
        if not any("environment" in v["preprocessing"] for s in specs for v in s["versions"]):
            raise
        print(
            f"[bench] execution environments could not be built ({str(error).splitlines()[0]}); "
            "serving the preprocessing in the server's own Python instead",
            flush=True,
        )
        return make_repository(workdir, [without_environments(s) for s in specs], cores)
    return output


def without_environments(spec: dict) -> dict:  # type: ignore[type-arg]
    """The spec with its preprocessing run in the server's own Python (no packed environment)."""
    spec = copy.deepcopy(spec)
    for version in spec["versions"]:
        version["preprocessing"].pop("environment", None)
        version["preprocessing"].pop("environment_format", None)
    return spec


def _baseline_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    env.update(extra, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(PROJECT_ROOT))
    return env


def _spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:
        return subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=PROJECT_ROOT, start_new_session=True
        )


def start_s1(workdir: Path, workers: int, threads: int, torch_threads: int | None, lru: int = 8) -> Running:
    """Gunicorn (gthread workers) + Flask + Transformers."""
    port = free_ports(1)[0]
    extra = {"BENCH_MODEL_DIR": str(model_dir()), "BENCH_LRU": str(lru)}
    if torch_threads:
        extra["BENCH_TORCH_THREADS"] = str(torch_threads)
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-k",
        "gthread",
        "-w",
        str(workers),
        "--threads",
        str(threads),
        "--timeout",
        "300",
        "-b",
        f"127.0.0.1:{port}",
        "bench.servers.flask_app:app",
    ]
    process = _spawn(command, _baseline_env(extra), workdir / "s1.log")
    setting = f"gunicorn {workers} workers x {threads} threads, torch threads {torch_threads or 'default'}"
    return Running("S1", setting, f"http://127.0.0.1:{port}", roots=[process.pid], processes=[process])


def start_tornado(
    workdir: Path, system: str, processes: int, extra_args: list[str], env: dict[str, str] | None = None
) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_ports(1)[0]
    command = [
        sys.executable,
        "-m",
        "bench.servers.tornado_app",
        "--system",
        system,
        "--port",
        str(port),
        "--processes",
        str(processes),
        "--tokenizer",
        str(tokenizer_file()),
        *extra_args,
    ]
    process = _spawn(command, _baseline_env(env or {"RAYON_NUM_THREADS": "1"}), workdir / f"{system}.log")
    return f"http://127.0.0.1:{port}", process


def start_s2(workdir: Path, repository: Path, processes: int, torch_threads: int | None) -> Running:
    """Tornado + PyTorch (the project's TorchScript artifact, mean pooling inside)."""
    model = inference_file(repository, "minilm_embed_ts")
    args = ["--torchscript", str(model)]
    if torch_threads:
        args += ["--torch-threads", str(torch_threads)]
    url, process = start_tornado(workdir, "s2", processes, args)
    setting = f"tornado {processes} processes, torch threads {torch_threads or 'default'}"
    return Running("S2", setting, url, roots=[process.pid], processes=[process])


def start_triton(workdir: Path, repository: Path, models: Sequence[str]) -> TritonProcess:
    """tritonserver over `repository`, started with the CPU budget (used by `rate_limit` specs)."""
    from generator.pipeline.plan import detected_cores

    http, grpc, metrics = free_ports(3)
    options = ServerOptions(
        repository=repository, ports=ServerPorts(http, grpc, metrics), models=tuple(models), cpu_budget=detected_cores()
    )
    folder = workdir / f"triton-{http}"
    folder.mkdir(parents=True, exist_ok=True)
    server = start_server(options, folder)
    try:
        server.wait_ready(600)
    except Exception:
        server.stop()
        raise
    return server


def start_s3(workdir: Path, repository: Path, processes: int, names: Sequence[str]) -> Running:
    """Tornado tokenizes, awaits Triton's inference models of the entry points `names` (gRPC, asyncio)."""
    models = [inference_model(repository, name) for name in names]
    triton = start_triton(workdir, repository, models)
    arguments = ["--triton-grpc", triton.grpc_url]
    for name, model in zip(names, models, strict=True):
        arguments += ["--triton-model", f"{name}={model}"]
    url, process = start_tornado(workdir, "s3", processes, arguments)
    setting = f"tornado {processes} processes -> triton " + (
        models[0] if len(models) == 1 else f"{len(models)} inference models"
    )
    return Running(
        "S3",
        setting,
        url,
        roots=[triton.process.pid, process.pid],
        processes=[process],
        triton=triton,
        stats_model=models[0] if len(models) == 1 else None,
    )


def start_t(workdir: Path, repository: Path) -> Running:
    """Triton alone: the padded `minilm_embed` inference model, fed tokens the client made."""
    model = inference_model(repository, "minilm_embed")
    triton = start_triton(workdir, repository, [model])
    return Running(
        "T",
        f"triton direct -> {model} (client tokenizes)",
        f"http://{triton.http_url}",
        grpc_url=triton.grpc_url,
        roots=[triton.process.pid],
        triton=triton,
        stats_model=model,
    )


def inference_model(repository: Path, ensemble: str) -> str:
    """The inference model an ensemble of the repository feeds (from its manifest)."""
    return read_manifest(repository).inference_model(ensemble)


def inference_file(repository: Path, ensemble: str) -> Path:
    """The model file of the inference model an ensemble feeds (from its manifest)."""
    manifest = read_manifest(repository)
    model = manifest.models[manifest.inference_model(ensemble)]
    return repository / model.name / TRITON_VERSION_DIR / model.files[0]


def start_s4(workdir: Path, repository: Path, models: Sequence[str], setting: str, variant: str = "") -> Running:
    """This project's ensembles on the embedded tritonserver."""
    triton = start_triton(workdir, repository, models)
    return Running(
        "S4",
        setting,
        f"http://{triton.http_url}",
        grpc_url=triton.grpc_url,
        roots=[triton.process.pid],
        triton=triton,
        stats_model=inference_model(repository, models[0]) if len(models) == 1 else None,
        variant=variant,
    )


def batch_counts(running: Running) -> tuple[int, int] | None:
    """(inferences, executions) of the running system's inference model so far (Triton statistics)."""
    if running.triton is None or running.stats_model is None:
        return None
    from generator.serving.tune import model_stats

    stats = model_stats(running.triton.http_url, running.stats_model)
    return int(stats["inference_count"]), int(stats["execution_count"])


def average_batch(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Inferences per execution between two `batch_counts` (None without statistics or executions)."""
    if before is None or after is None or after[1] == before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def stop(running: Running) -> None:
    for process in running.processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
    if running.triton is not None:
        running.triton.stop()


@contextlib.contextmanager
def started(running: Running) -> Iterator[Running]:
    try:
        yield running
    finally:
        stop(running)


def post_json(url: str, body: str, timeout: float = 60.0) -> dict:  # type: ignore[type-arg]
    request = urllib.request.Request(
        url, data=body.encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def embedding_of(answer: dict) -> np.ndarray:  # type: ignore[type-arg]
    """The embedding in a baseline answer, an OpenAI-style answer or a KServe v2 JSON answer."""
    if "embedding" in answer:
        return np.asarray(answer["embedding"], dtype=np.float32)
    if "data" in answer:
        return np.asarray(answer["data"][0]["embedding"], dtype=np.float32)
    return np.asarray(answer["outputs"][0]["data"], dtype=np.float32)


def wait_answering(
    url: str, body: str, expected: np.ndarray, timeout_s: float = 300.0, process: subprocess.Popen[bytes] | None = None
) -> float:
    """Poll until the server answers `body`; check the answer against `expected` (cosine)."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise BenchError(f"{url}: server exited with code {process.returncode}")
        try:
            got = embedding_of(post_json(url, body))
        except (OSError, ValueError, KeyError) as error:
            last = error
            time.sleep(0.5)
            continue
        cosine = float(got @ expected / (np.linalg.norm(got) * np.linalg.norm(expected)))
        if got.shape != expected.shape or cosine < 0.999:
            raise BenchError(f"{url}: wrong embedding (shape {got.shape}, cosine {cosine:.5f})")
        return cosine
    raise BenchError(f"{url}: no answer within {timeout_s:.0f}s ({last})")


def grpc_check(grpc_url: str, model: str, text: str, expected: np.ndarray) -> float:
    """One gRPC request to an ensemble, checked against `expected` (cosine)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(grpc_url)
    tensor = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[text.encode()]], dtype=object))
    got = client.infer(model, [tensor]).as_numpy("EMBEDDING")[0]
    cosine = float(got @ expected / (np.linalg.norm(got) * np.linalg.norm(expected)))
    if cosine < 0.999:
        raise BenchError(f"gRPC {model}: wrong embedding (cosine {cosine:.5f})")
    return cosine
