"""The repository budget, measured: bulk priority and threads per model.

    python -m bench.budget priority [--duration 30] [--online 4] [--bulk 2] [--bulk-batch 64]
    python -m bench.budget threads [--copies 6 | --specs models] [--load-threads N]

Both generate a repository from the shipped `models/minilm_embed.yaml` into a temporary folder
(`--cores`, default the detected cores) and serve it on the embedded tritonserver the way
`tritongen serve` does (the manifest's server settings).

`priority`: `<name>` and `<name>_batch` share one inference model. Three phases of
`--duration` seconds each, over gRPC: `alone` (`--online` closed-loop clients, one text per
request, to `<name>`); `bulk, same level` (plus `--bulk` closed-loop clients sending
`--bulk-batch` texts per request to `<name>_batch` WITHOUT a priority: online's level); `bulk,
priority 2` (the bulk clients send the manifest's priority). Reports online p50/p95/p99 and
texts/s of both kinds.

`threads`: `--copies` renamed copies of the spec (sized by the repository budget, `plan.py`),
every entry point answered once, then the threads of the server process and of every stub
process (from /proc), per model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bench import corpus, procstat
from bench.arguments import positive
from generator import PROJECT_ROOT
from generator.base.launch import ServerOptions, ServerPorts
from generator.pipeline.generate import GenerateOptions, generate
from generator.pipeline.manifest import read_manifest
from generator.pipeline.plan import detected_cores
from generator.serving.ports import free_ports
from generator.serving.process import TritonProcess, manifest_settings, start_server
from generator.serving.watchdog import stub_processes

SPEC = PROJECT_ROOT / "models" / "minilm_embed.yaml"


def make_repository(workdir: Path, copies: int, cores: int, specs: Path | None = None) -> Path:
    """`copies` copies of the shipped spec (`m00`, `m01`, ...; one copy keeps its name), or the
    specs of a folder as they are, generated."""
    if specs is None:
        spec = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
        specs = workdir / "specs"
        specs.mkdir(parents=True, exist_ok=True)
        names = [spec["name"]] if copies == 1 else [f"m{index:02d}" for index in range(copies)]
        for name in names:
            (specs / f"{name}.yaml").write_text(yaml.safe_dump({**spec, "name": name}), encoding="utf-8")
    output = workdir / "repository"
    generate(GenerateOptions(specs_dir=specs, output=output, cores=cores, progress=lambda _: None))
    return output


def serve(workdir: Path, repository: Path, load_threads: int | None = None, log_verbose: int = 0) -> TritonProcess:
    """The embedded tritonserver over `repository`, ready (the manifest's settings; `load_threads`
    replaces its `--model-load-thread-count`)."""
    http, grpc, metrics = free_ports(3)
    settings = manifest_settings(repository)
    if load_threads is not None:
        settings = replace(settings, model_load_threads=load_threads)
    options = ServerOptions(
        repository=repository, ports=ServerPorts(http, grpc, metrics), settings=settings, log_verbose=log_verbose
    )
    server = start_server(options, workdir / "server")
    server.wait_ready(600)
    return server


def _infer(client: Any, model: str, texts: list[str], output: str, priority: int) -> None:
    import tritonclient.grpc as grpcclient

    data = np.array([[t.encode()] for t in texts], dtype=object)
    tensor = grpcclient.InferInput("TEXT", list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data)
    result = client.infer(model, [tensor], outputs=[grpcclient.InferRequestedOutput(output)], priority=priority)
    rows = result.as_numpy(output)
    if rows is None or rows.shape[0] != len(texts):
        raise RuntimeError(f"{model}: {len(texts)} texts gave {None if rows is None else rows.shape}")


def _closed_loop(
    url: str, stop: threading.Event, send: Callable[[Any, int], None], latencies: list[float], errors: list[str]
) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    sent = 0
    while not stop.is_set():
        began = time.monotonic()
        try:
            send(client, sent)
        except Exception as error:  # noqa: BLE001 - every failure is reported
            errors.append(str(error).splitlines()[0])
        else:
            latencies.append(time.monotonic() - began)
        sent += 1
    client.close()


WAIT_PARTS = (
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
)


def model_counters(metrics_url: str, model: str) -> dict[str, float]:
    """Triton's cumulative counters of one model (`/metrics`, Prometheus text)."""
    import urllib.request

    with urllib.request.urlopen(f"http://{metrics_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    counters: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("nv_inference_") and f'model="{model}"' in line:
            counters[line.split("{", 1)[0]] = counters.get(line.split("{", 1)[0], 0.0) + float(line.rsplit(" ", 1)[1])
    return counters


def ensemble_wait_ms(before: dict[str, float], after: dict[str, float]) -> float | None:
    """Per request of an ensemble: its duration minus its steps' compute, i.e. the time its
    requests waited in the composing models' queues (and the ensemble's own overhead)."""
    requests = after["nv_inference_request_success"] - before["nv_inference_request_success"]
    if requests <= 0:
        return None
    total = after["nv_inference_request_duration_us"] - before["nv_inference_request_duration_us"]
    compute = sum(after[k] - before[k] for k in WAIT_PARTS)
    return round((total - compute) / requests / 1000, 2)


def phase(
    server: TritonProcess,
    name: str,
    bulk_name: str,
    duration: float,
    online: int,
    bulk: int,
    batch: int,
    priority: int | None,
) -> dict:  # type: ignore[type-arg]
    """One phase: online clients of `name` (and bulk clients of `bulk_name` unless `priority` is
    None); its figures."""
    url = server.grpc_url
    metrics_url = f"{server.options.address}:{server.options.ports.metrics}"
    before = model_counters(metrics_url, name)
    texts = corpus.sentences()
    stop = threading.Event()
    online_latencies: list[float] = []
    bulk_latencies: list[float] = []
    errors: list[str] = []

    def online_send(client: Any, index: int) -> None:
        _infer(client, name, [texts[index % len(texts)]], "EMBEDDING", 0)

    def bulk_send(client: Any, index: int) -> None:
        start = (index * batch) % (len(texts) - batch)
        _infer(client, bulk_name, texts[start : start + batch], "EMBEDDING", priority or 0)

    workers = [
        threading.Thread(target=_closed_loop, args=(url, stop, online_send, online_latencies, errors))
        for _ in range(online)
    ]
    if priority is not None:
        workers += [
            threading.Thread(target=_closed_loop, args=(url, stop, bulk_send, bulk_latencies, errors))
            for _ in range(bulk)
        ]
    for worker in workers:
        worker.start()
    time.sleep(duration)  # the measurement window, not a synchronisation
    stop.set()
    for worker in workers:
        worker.join()
    wait = ensemble_wait_ms(before, model_counters(metrics_url, name))
    ordered = sorted(online_latencies)

    def percentile(share: float) -> float:
        return 1000 * ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")

    return {
        "online_requests": len(ordered),
        "online_p50_ms": round(percentile(0.50), 1),
        "online_p95_ms": round(percentile(0.95), 1),
        "online_p99_ms": round(percentile(0.99), 1),
        "online_mean_ms": round(1000 * statistics.fmean(ordered), 1) if ordered else None,
        "online_ensemble_wait_ms": wait,
        "online_texts_per_s": round(len(ordered) / duration, 1),
        "bulk_texts_per_s": round(len(bulk_latencies) * batch / duration, 1),
        "bulk_request_mean_ms": round(1000 * statistics.fmean(bulk_latencies), 1) if bulk_latencies else None,
        "errors": errors[:5],
        "error_count": len(errors),
    }


def run_priority(args: argparse.Namespace) -> dict:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory(prefix="tritongen-budget-") as work:
        repository = make_repository(Path(work), 1, args.cores)
        manifest = read_manifest(repository)
        online = manifest.entry_points("online")[0]
        name = online.name
        bulk = manifest.entry_points("bulk", online.spec)[0]
        bulk_priority = bulk.priority or 0
        server = serve(Path(work), repository)
        try:
            phase(server, name, bulk.name, 5, args.online, args.bulk, args.bulk_batch, bulk_priority)  # warm-up
            phases = {}
            for label, priority in (
                ("alone", None),
                ("bulk, same level", 0),
                (f"bulk, priority {bulk_priority}", bulk_priority),
                ("bulk, same level (again)", 0),
                (f"bulk, priority {bulk_priority} (again)", bulk_priority),
            ):
                phases[label] = phase(
                    server, name, bulk.name, args.duration, args.online, args.bulk, args.bulk_batch, priority
                )
                print(label, json.dumps(phases[label]), flush=True)
        finally:
            server.stop()
    clients = {"online": args.online, "bulk": args.bulk, "bulk_batch": args.bulk_batch}
    return {"cores": args.cores, **clients, "phases": phases}


def run_threads(args: argparse.Namespace) -> dict:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory(prefix="tritongen-budget-") as work:
        repository = make_repository(Path(work), args.copies, args.cores, args.specs)
        manifest = read_manifest(repository)
        began = time.monotonic()
        server = serve(Path(work), repository, args.load_threads, log_verbose=1)
        ready_s = time.monotonic() - began
        try:
            import tritonclient.grpc as grpcclient

            client = grpcclient.InferenceServerClient(server.grpc_url)
            for entry in manifest.ensembles():
                if entry.inputs == ("TEXT",):  # rerankers' entry points take QUERY too
                    _infer(client, entry.name, ["Threads of a loaded server."], entry.outputs[0], entry.priority or 0)
            client.close()
            pid = server.process.pid
            server_threads = procstat.threads([pid])[pid][1]
            by_model: dict[str, list[int]] = {}
            for stub in stub_processes(pid):
                by_model.setdefault(stub.model, []).append(procstat.threads([stub.pid]).get(stub.pid, ("", 0))[1])
            extracted = server.log_text().count("Extracting Python execution env ")
        finally:
            server.stop()
    specs = len({m.spec for m in manifest.models.values()})
    environments = {m.environment for m in manifest.models.values() if m.environment}
    stub_total = sum(sum(counts) for counts in by_model.values())
    return {
        "cores": args.cores,
        "specs": specs,
        "rate_limit_cores": manifest.rate_limit_cores,
        "model_load_threads": args.load_threads or manifest.model_load_threads,
        "ready_s": round(ready_s, 1),
        "environments": len(environments),
        "environments_extracted": extracted,
        "preprocessing_models": len([m for m in manifest.models.values() if m.role == "preprocess"]),
        "server_process_threads": server_threads,
        "stub_threads": {name: counts for name, counts in sorted(by_model.items())},
        "stub_processes": sum(len(c) for c in by_model.values()),
        "total_threads": server_threads + stub_total,
        "threads_per_spec": round((server_threads + stub_total) / specs, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.budget", description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=positive(int), default=detected_cores())
    commands = parser.add_subparsers(dest="command", required=True)
    priority = commands.add_parser("priority", help="online latency under a bulk job, with and without priority")
    priority.add_argument("--duration", type=positive(float), default=30.0)
    priority.add_argument("--online", type=positive(int), default=4, help="online closed-loop clients")
    priority.add_argument("--bulk", type=positive(int), default=2, help="bulk closed-loop clients")
    priority.add_argument("--bulk-batch", type=positive(int), default=64, help="texts per bulk request")
    threads = commands.add_parser("threads", help="threads per model in a loaded server")
    threads.add_argument("--copies", type=positive(int), default=6)
    threads.add_argument("--specs", type=Path, default=None, help="generate this folder's specs instead of copies")
    threads.add_argument("--load-threads", type=positive(int), default=None, help="replace --model-load-thread-count")
    args = parser.parse_args(argv)
    if args.command == "priority" and args.bulk_batch >= corpus.SIZE:
        parser.error(f"--bulk-batch must be below the corpus's {corpus.SIZE} texts, not {args.bulk_batch}")
    result = run_priority(args) if args.command == "priority" else run_threads(args)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
