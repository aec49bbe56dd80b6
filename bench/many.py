"""`python -m bench.many [--models 100]`: a catalogue of N fine-tuned classifiers on one server.

N classifier specs (builder `prototype_classifier`, each with its own label
set, example texts and scale, so that every model file has its own head and no two are
byte-identical), all with the same preprocessing (tokenizer, parameters, environment), as in
a catalogue of models fine-tuned from one encoder. The same harness runs twice in one
invocation: one model (the first of the catalogue), then all N, each generated with
`tritongen generate` and served like `tritongen serve` on the `local` target (admin key,
CPU budget from the manifest, stub watchdog, update state). Per run: time from server start to
every model ready, server PSS/RSS, threads and processes under load, and a Zipf (s=1) mix at
concurrency 32 over the N online entry points (wrk, KServe v2 JSON, the bench corpus). Then,
under that load, one model's spec is changed (its head "retrained": another scale),
the repository regenerated, and `tritongen update` loads it: every request of the load
counts, failed ones must be 0. Prints the table and the catalogue's targets, writes
bench/results/many-<timestamp>/{results.json,results.md}.

`--grow`: the catalogue grows on ONE running server instead: the first classifier is served
alone and measured (the single-model run), then the others are added one at a time, each by
regenerating the repository with one more spec and running `tritongen update` while the Zipf
load over the models already served runs (every request counts), then the Zipf mix over all of
them is measured: per step, failed requests (must be 0), memory, threads, throughput and p99
against the single-model step, and whether the update had to refuse a server setting (adding
a spec must never need a restart). Writes results-grow.{json,md}.

Every classifier declares its share of the Zipf load as its `traffic_weight` (1 / rank), so
that the repository budget gives the hottest one the cores; the budget's memory is
`--memory-mib` (default 16 GiB, the product's default).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import random
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from generator.base.launch import ServerOptions, ServerPorts, admin_headers
from generator.pipeline.generate import GenerateOptions, generate
from generator.pipeline.manifest import read_manifest
from generator.pipeline.plan import TRITON_VERSION_DIR, detected_cores
from generator.pipeline.repository_settings import DEFAULT_MEMORY_MIB
from generator.pipeline.spec import REPOSITORY_FILE
from generator.serving.diagnostics import load_errors
from generator.serving.ports import free_ports
from generator.serving.process import TritonProcess, start_server
from generator.serving.update import content_index, file_digest, record_loaded
from generator.serving.watchdog import StubWatchdog, stub_processes

from . import corpus, loadgen, procstat
from .run import Bench, Profile, http_script, measure, wrk_load
from .systems import PROJECT_ROOT, BenchError, Running, inference_file, post_json, spec_dict, without_environments

RESULTS = Path(__file__).resolve().parent / "results"
ARTIFACT_CACHE = RESULTS / "many-artifacts"
"""The catalogue's model files (~90 MB each), kept between runs (git-ignored; delete to free)."""
MIB = 2**20


@dataclass(frozen=True)
class Targets:
    """The catalogue's targets (benchmark on the `local` target, same run)."""

    ready_s: float = 180.0
    """All models ready (for N = 100)."""
    pss_per_extra_mib: float = 130.0
    threads_per_model: float = 10.0
    zipf_rps_ratio: float = 0.9
    zipf_p99_ratio: float = 1.5
    update_failed: int = 0


@dataclass
class Options:
    models: int = 100
    concurrency: int = 32
    seconds: float = 20.0
    warmup_s: float = 5.0
    update_chunk_s: float = 10.0
    """The load during the update runs in wrk runs of this length until the update is done."""
    ready_timeout_s: float = 900.0
    min_available_mib: float = 2048.0
    """Stop the server while loading if the machine's available memory falls below this."""
    cores: int = 1
    update: bool = True
    server_args: tuple[str, ...] = ()
    """Extra tritonserver arguments (to measure a server setting the product does not set)."""
    memory_mib: int = DEFAULT_MEMORY_MIB
    """The repository budget's memory (`repository.yaml`'s `memory_mib`)."""
    measure_at: tuple[int, ...] = ()
    """`--grow`: the model counts whose Zipf mix is measured (empty: every count). Every
    addition runs under load and counts its failed requests either way; the first and the
    last count are always measured."""


# --- the catalogue -----------------------------------------------------------------------------


def catalogue_spec(index: int, words: Sequence[str], quantize: str | None = None) -> dict[str, Any]:
    """Classifier `index` of the catalogue: its own labels, examples and scale; shared preprocessing.

    The preprocessing section and the batching are `models/minilm_embed_padded.yaml`'s (same
    tokenizer file, parameters and environment; padded, as `format: onnx` needs) for every
    index, so that the models differ only in their weights. `quantize` (e.g. `dynamic_int8`) is
    the spec's `model.quantize`. Its `traffic_weight` is its share of the Zipf load,
    1 / (index + 1) (`corpus.zipf_indices`: index 0 is the hottest).
    """
    rng = random.Random(f"bench.many:{index}")
    labels: dict[str, list[str]] = {}
    for label in rng.sample(list(words), 2 + index % 5):
        labels[label] = [
            f"{label} " + " ".join(rng.choice(words) for _ in range(rng.randint(5, 14))) + "."
            for _ in range(rng.randint(2, 4))
        ]
    base = spec_dict("minilm_embed_padded")
    model: dict[str, Any] = {"format": "onnx"}
    if quantize:
        model["quantize"] = quantize
    preprocessing = copy.deepcopy(base["versions"][0]["preprocessing"])
    source = base["versions"][0]["model"]["build"]["source"]
    return {
        "name": f"clf{index:03d}",
        "kind": "classifier",
        "description": f"catalogue classifier {index} of bench/many.py ({len(labels)} labels)",
        "default_version": 1,
        "batching": copy.deepcopy(base["batching"]),
        "bulk_batching": copy.deepcopy(base["bulk_batching"]),
        "traffic_weight": round(1 / (index + 1), 6),
        "versions": [
            {
                "version": 1,
                "preprocessing": preprocessing,
                "model": {
                    **model,
                    "build": {
                        "builder": "prototype_classifier",
                        "source": dict(source),
                        "scale": round(10.0 + (index * 37 % 200) / 10, 1),
                        "labels": labels,
                    },
                },
                "outputs": {"labels": list(labels)},
            }
        ],
    }


def catalogue(count: int, quantize: str | None = None) -> list[dict[str, Any]]:
    """The first `count` classifiers of the catalogue (the same for every run)."""
    words = corpus._words()
    return [catalogue_spec(index, words, quantize) for index in range(count)]


def retrained(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with a "retrained" head: the same labels and examples, 1.5 x the scale."""
    spec = copy.deepcopy(spec)
    build = spec["versions"][0]["model"]["build"]
    build["scale"] = round(build["scale"] * 1.5, 2)
    return spec


def write_specs(folder: Path, specs: Sequence[dict[str, Any]], memory_mib: int = DEFAULT_MEMORY_MIB) -> Path:
    """Write the specs and the budget's `repository.yaml` (`memory_mib`) to `folder/specs`
    (replacing what was there)."""
    specs_dir = folder / "specs"
    specs_dir.mkdir(parents=True, exist_ok=True)
    for old in specs_dir.glob("*.yaml"):
        old.unlink()
    for spec in specs:
        (specs_dir / f"{spec['name']}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    (specs_dir / REPOSITORY_FILE).write_text(yaml.safe_dump({"memory_mib": memory_mib}), encoding="utf-8")
    return specs_dir


def generate_repository(
    folder: Path,
    specs: Sequence[dict[str, Any]],
    cores: int,
    log: Callable[[str], None],
    memory_mib: int = DEFAULT_MEMORY_MIB,
    said: list[str] | None = None,
) -> tuple[Path, float]:
    """`tritongen generate` of the specs into `folder/repository`; (repository, seconds); `said`
    collects every line generate printed (its layout changes among them).

    Like `bench.systems.make_repository`, with the catalogue's own artifact cache; without a
    conda channel the preprocessing runs in the server's own Python (the run says so)."""
    specs_dir = write_specs(folder, specs, memory_mib)
    output = folder / "repository"
    began = time.monotonic()

    def progress(line: str) -> None:
        if said is not None:
            said.append(line)
        if "building" in line or line.startswith(("planned", "wrote", "layout", "server setting", "expected memory")):
            log(line.strip().split(" (target ")[0])

    try:
        generate(
            GenerateOptions(
                specs_dir=specs_dir, output=output, cores=cores, cache_dir=ARTIFACT_CACHE, progress=progress
            )
        )
    except Exception as error:  # noqa: BLE001 - any environment build failure
        if not any("environment" in v["preprocessing"] for s in specs for v in s["versions"]):
            raise
        log(f"execution environments could not be built ({str(error).splitlines()[0]}): preprocessing in-server")
        return generate_repository(folder, [without_environments(s) for s in specs], cores, log, memory_mib, said)
    return output, time.monotonic() - began


# --- serving -----------------------------------------------------------------------------------


@dataclass
class Served:
    """A server started like `tritongen serve` (admin key, budget, watchdog, update state)."""

    server: TritonProcess
    key: str
    state: Path
    watchdog: StubWatchdog | None = None

    @property
    def url(self) -> str:
        return self.server.http_url

    def running(self, setting: str) -> Running:
        return Running(
            "S4", setting, f"http://{self.url}", self.server.grpc_url, [self.server.process.pid], triton=self.server
        )

    def stop(self) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()
        self.server.stop()


@dataclass
class Loading:
    """How the server came up."""

    ready_s: float
    index_s: float
    """`content_index` before start (what `tritongen serve` hashes for `update`)."""
    triton_models: int
    timeline: list[dict[str, float]] = field(default_factory=list)
    """Samples while loading: t (s), models loaded, server tree PSS (MiB), machine MemAvailable (MiB)."""
    loaded_at: dict[str, float] = field(default_factory=dict)
    """Triton model -> seconds after the server's first log line at which it was loaded (log times)."""


def mem_available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _log_seconds(stamp: str) -> float:
    hours, minutes, seconds = stamp.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def load_completions(log: str) -> dict[str, float]:
    """Model -> seconds from the server's first log line to its `successfully loaded` line."""
    stamps = re.findall(r"^[IWE]\d{4} (\d\d:\d\d:\d\d\.\d+)", log, re.MULTILINE)
    if not stamps:
        return {}
    start = _log_seconds(stamps[0])
    found = re.findall(
        r"^[IWE]\d{4} (\d\d:\d\d:\d\d\.\d+) .*successfully loaded '([A-Za-z0-9_.-]+)'", log, re.MULTILINE
    )
    return {name: (_log_seconds(stamp) - start) % 86400 for stamp, name in found}


def serve(repository: Path, workdir: Path, options: Options, log: Callable[[str], None]) -> tuple[Served, Loading]:
    """Start tritonserver on `repository` as `tritongen serve` does and wait for every model."""
    manifest = read_manifest(repository)
    began = time.monotonic()
    index = content_index(repository)
    index_s = time.monotonic() - began
    key = secrets.token_urlsafe(24)
    http, grpc, metrics = free_ports(3)
    server_options = ServerOptions(
        repository=repository,
        ports=ServerPorts(http, grpc, metrics),
        admin_key=key,
        cpu_budget=manifest.cpu_budget,
        extra_args=options.server_args,
    )
    folder = workdir / f"triton-{http}"
    started = time.monotonic()
    server = start_server(server_options, folder)
    served = Served(server, key, folder / "loaded.json")
    loading = Loading(0.0, index_s, len(index))
    try:
        _wait_ready(served, loading, started, options, log)
        record_loaded(repository, served.url, key, index, served.state)
        served.watchdog = StubWatchdog(server.process.pid, served.url, admin_headers(key), progress=log)
        served.watchdog.start()
    except BaseException:
        served.stop()
        raise
    loading.loaded_at = load_completions(server.log_text())
    return served, loading


def _wait_ready(served: Served, loading: Loading, started: float, options: Options, log: Callable[[str], None]) -> None:
    """Poll readiness; sample progress and memory; stop before the machine runs out of memory."""
    server = served.server
    next_sample = started
    while True:
        now = time.monotonic()
        if server.process.poll() is not None:
            raise BenchError(f"tritonserver exited with code {server.process.returncode}:\n{server.log_tail()}")
        if server.is_ready():
            loading.ready_s = time.monotonic() - started
            return
        if now - started > options.ready_timeout_s:
            raise BenchError(f"not ready after {options.ready_timeout_s:.0f}s:\n{server.log_tail()}")
        available = mem_available_mib()
        text = server.log_text()
        loaded = text.count("successfully loaded '")
        if available < options.min_available_mib:
            pss = procstat.pss_bytes(procstat.tree(server.process.pid)) / MIB
            raise BenchError(
                f"stopped while loading: the machine had {available:.0f} MiB available after "
                f"{now - started:.0f}s, {loaded}/{loading.triton_models} Triton models loaded, server "
                f"PSS {pss:.0f} MiB ({pss / max(loaded, 1):.0f} MiB per loaded Triton model)"
            )
        errors = load_errors(text)
        if errors:
            raise BenchError(f"models failed to load:\n{errors}")
        if now >= next_sample:
            pss = procstat.pss_bytes(procstat.tree(server.process.pid)) / MIB
            loading.timeline.append(
                {
                    "t": round(now - started, 1),
                    "loaded": loaded,
                    "pss_mib": round(pss),
                    "available_mib": round(available),
                }
            )
            log(
                f"  loading: {loaded}/{loading.triton_models} Triton models after {now - started:.0f}s, "
                f"PSS {pss:.0f} MiB"
            )
            next_sample = now + 10
        time.sleep(0.5)


# --- answers -----------------------------------------------------------------------------------


def infer(url: str, model: str, text: str) -> dict[str, Any]:
    """One text to an entry point: output name -> data."""
    answer = post_json(f"http://{url}/v2/models/{model}/infer", loadgen.kserve_body(text))
    return {output["name"]: output["data"] for output in answer["outputs"]}


def reference_logits(repository: Path, spec: dict[str, Any], text: str) -> np.ndarray:
    """LOGITS of the spec's model file in this process (onnxruntime), tokenized like the server."""
    import onnxruntime as ort

    from generator.pipeline.artifacts import tokenize_like_server
    from generator.pipeline.spec import ModelSpec

    validated = ModelSpec.model_validate(spec)
    model_file = inference_file(repository, spec["name"])
    ids, mask = tokenize_like_server([text], validated.versions[0].preprocessing)
    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    feeds = {i.name: (ids if "ids" in i.name else mask) for i in session.get_inputs()}
    logits = next(o.name for o in session.get_outputs() if "logit" in o.name.lower())
    return np.asarray(session.run([logits], feeds)[0][0], dtype=np.float32)


INT8_MIN_COSINE = 0.995
"""An int8 file's served LOGITS against the same file in this process: dynamic quantization
scales activations per batch tensor, so a text padded in a shared tokenizer call with other
models' longer texts gets slightly other logits (measured 0.15 apart) than the text alone."""


def close_to(got: Sequence[float], expected: np.ndarray, quantized: bool = False) -> bool:
    """fp32: equal within 1e-3; int8: the same argmax and cosine >= INT8_MIN_COSINE."""
    values = np.asarray(got, dtype=np.float32)
    if values.shape != expected.shape:
        return False
    if not quantized:
        return bool(np.allclose(values, expected, rtol=1e-3, atol=1e-3))
    cosine = float(values @ expected / max(float(np.linalg.norm(values) * np.linalg.norm(expected)), 1e-30))
    return int(values.argmax()) == int(expected.argmax()) and cosine >= INT8_MIN_COSINE


def check_answers(url: str, repository: Path, specs: Sequence[dict[str, Any]], texts: Sequence[str]) -> dict[str, Any]:
    """One request to every entry point (also warms every model): LOGITS per label, LABEL one of
    the spec's labels; the first model's LOGITS equal its model file's in this process."""
    distinct: set[tuple[float, ...]] = set()
    for index, spec in enumerate(specs):
        labels = spec["versions"][0]["outputs"]["labels"]
        answer = infer(url, spec["name"], texts[0])
        logits, label = answer["LOGITS"], answer["LABEL"][0]
        if len(logits) != len(labels) or label not in labels:
            raise BenchError(f"{spec['name']}: answered {answer}, labels {labels}")
        distinct.add(tuple(round(v, 4) for v in logits))
        if index == 0:
            expected = reference_logits(repository, spec, texts[0])
            if not close_to(logits, expected, quantized=bool(spec["versions"][0]["model"].get("quantize"))):
                raise BenchError(f"{spec['name']}: LOGITS {logits} differ from the model file's {expected.tolist()}")
    return {"answered": len(specs), "distinct_logits": len(distinct)}


def weight_files(repository: Path) -> dict[str, set[str]]:
    """Spec -> sha256 of the model files its inference models serve (cached by inode)."""
    manifest = read_manifest(repository)
    files: dict[str, set[str]] = {}
    for name, entry in manifest.models.items():
        if entry.role == "inference":
            for filename in entry.files:
                files.setdefault(entry.spec, set()).add(file_digest(repository / name / TRITON_VERSION_DIR / filename))
    return files


# --- measurements ------------------------------------------------------------------------------


def process_breakdown(server_pid: int, repository: Path) -> list[dict[str, Any]]:
    """Processes, threads, PSS and RSS of the server's tree by kind (server, preprocessing, inference)."""
    manifest = read_manifest(repository)
    stubs = {stub.pid: stub.model for stub in stub_processes(server_pid)}
    groups: dict[str, dict[str, Any]] = {}
    for pid in procstat.tree(server_pid):
        model = stubs.get(pid)
        if pid == server_pid:
            kind = "tritonserver"
        elif model is None:
            kind = "other"
        else:
            entry = manifest.models.get(model)
            role = entry.role if entry else "unknown"
            kind = f"{role} stubs"
        group = groups.setdefault(kind, {"kind": kind, "processes": 0, "threads": 0, "pss_mib": 0.0, "rss_mib": 0.0})
        counts = procstat.threads([pid])
        group["processes"] += 1
        group["threads"] += sum(c for _, c in counts.values())
        group["pss_mib"] += procstat.pss_bytes([pid]) / MIB
        group["rss_mib"] += procstat.rss_bytes([pid]) / MIB
    for group in groups.values():
        group["pss_per_process_mib"] = group["pss_mib"] / max(group["processes"], 1)
    return sorted(groups.values(), key=lambda g: -g["pss_mib"])


def stats_snapshot(url: str, key: str, models: Sequence[str]) -> dict[str, tuple[int, int, int, int]]:
    """Model -> (requests, executions, queue ns, compute ns) so far (Triton statistics, admin key)."""
    import urllib.request

    out = {}
    for model in models:
        request = urllib.request.Request(f"http://{url}/v2/models/{model}/stats", headers=admin_headers(key))
        with urllib.request.urlopen(request, timeout=30) as response:
            stats = json.loads(response.read())["model_stats"][0]
        inference = stats["inference_stats"]
        out[model] = (
            int(stats["inference_count"]),
            int(stats["execution_count"]),
            int(inference["queue"]["ns"]),
            int(inference["compute_infer"]["ns"]),
        )
    return out


def queue_summary(
    before: dict[str, tuple[int, int, int, int]], after: dict[str, tuple[int, int, int, int]], hot: str
) -> dict[str, dict[str, float]]:
    """Requests, mean queue wait, mean batch and compute per execution: the hottest model, the others."""
    groups: dict[str, list[str]] = {"hottest": [hot], "others": [m for m in after if m != hot]}
    out = {}
    for label, models in groups.items():
        requests = sum(after[m][0] - before[m][0] for m in models)
        executions = sum(after[m][1] - before[m][1] for m in models)
        queue = sum(after[m][2] - before[m][2] for m in models)
        compute = sum(after[m][3] - before[m][3] for m in models)
        out[label] = {
            "models": len(models),
            "requests": requests,
            "queue_ms": queue / requests / 1e6 if requests else 0.0,
            "batch": requests / executions if executions else 0.0,
            "compute_ms_per_batch": compute / executions / 1e6 if executions else 0.0,
        }
    return out


def tree_memory(server_pid: int) -> dict[str, float]:
    pids = procstat.tree(server_pid)
    counts = procstat.threads(pids)
    return {
        "pss_mib": procstat.pss_bytes(pids) / MIB,
        "rss_mib": procstat.rss_bytes(pids) / MIB,
        "threads": sum(c for _, c in counts.values()),
        "processes": len(counts),
    }


def run_once(
    bench: Bench, label: str, specs: list[dict[str, Any]], options: Options
) -> tuple[dict[str, Any], Served | None, Path]:
    """Generate, serve, check and measure the Zipf mix over `specs`; the server stays up for the update."""
    folder = bench.workdir / label
    repository, generate_s = generate_repository(folder, specs, bench.cores, bench.log, options.memory_mib)
    files = weight_files(repository)
    bench.log(f"{label}: generated {len(specs)} specs in {generate_s:.0f}s; starting the server")
    row: dict[str, Any] = {"run": label, "models": len(specs), "generate_s": generate_s}
    try:
        served, loading = serve(repository, bench.workdir, options, bench.log)
    except BenchError as error:
        row["failed"] = str(error)
        bench.log(f"{label}: {error}")
        return row, None, repository
    try:
        row["loading"] = asdict(loading)
        row["ready_s"] = loading.ready_s
        row["triton_models"] = loading.triton_models
        digests = [digest for spec_files in files.values() for digest in spec_files]
        row["weight_files"] = len(digests)
        row["distinct_weight_files"] = len(set(digests))
        bench.log(
            f"{label}: {len(specs)} models ({loading.triton_models} Triton models) ready in {loading.ready_s:.1f}s; "
            f"{len(set(digests))} distinct model files over {len(files)} specs ({len(digests)} spec-file pairs)"
        )
        row["answers"] = check_answers(served.url, repository, specs, bench.texts)
        row["idle"] = tree_memory(served.server.process.pid)
        names = [spec["name"] for spec in specs]
        script = http_script(bench, f"zipf-{label}", lambda n: f"/v2/models/{n}/infer", loadgen.kserve_body, names)
        running = served.running(label)
        manifest = read_manifest(repository)
        inference = [manifest.inference_model(n) for n in names]
        before = stats_snapshot(served.url, served.key, inference)
        cell = measure(bench, running, "http", options.concurrency, options.seconds, wrk_load(running, script))
        row["load"] = asdict(cell)
        row["queues"] = queue_summary(before, stats_snapshot(served.url, served.key, inference), inference[0])
        row["breakdown"] = process_breakdown(served.server.process.pid, repository)
        row["script"] = str(script)
    except BaseException:
        served.stop()
        raise
    return row, served, repository


def update_under_load(
    bench: Bench, served: Served, folder: Path, specs: list[dict[str, Any]], options: Options, script: Path
) -> dict[str, Any]:
    """Retrain model 0 (the hottest), regenerate, `tritongen update` while the Zipf load runs."""
    changed = [retrained(specs[0]), *specs[1:]]
    repository, generate_s = generate_repository(folder, changed, bench.cores, bench.log, options.memory_mib)
    bench.log(f"update: regenerated with {specs[0]['name']} retrained in {generate_s:.0f}s")
    outcome, chunks = update_during_load(bench, served, repository, script, options)
    summary = re.search(r"update done in ([\d.]+)s.*", outcome.get("output", ""))
    loaded = re.findall(r"^loaded (\S+)", outcome.get("output", ""), re.MULTILINE)
    new = infer(served.url, specs[0]["name"], bench.texts[0])["LOGITS"]
    expected = reference_logits(repository, changed[0], bench.texts[0])
    requests = sum(c.requests for c in chunks)
    return {
        "model": specs[0]["name"],
        "change": f"scale {specs[0]['versions'][0]['model']['build']['scale']} -> "
        f"{changed[0]['versions'][0]['model']['build']['scale']}",
        "generate_s": generate_s,
        "update_s": outcome.get("seconds", 0.0),
        "returncode": outcome.get("returncode"),
        "summary": summary.group(0) if summary else outcome.get("output", "")[-500:],
        "apply_s": float(summary.group(1)) if summary else None,
        "loaded": loaded,
        "requests": requests,
        "failed": sum(c.errors for c in chunks),
        "rps": requests / (len(chunks) * options.update_chunk_s),
        "p99_ms_max": max(c.p99_ms for c in chunks),
        "chunks": [asdict(c) for c in chunks],
        "serves_new_head": close_to(new, expected),
    }


def update_during_load(
    bench: Bench, served: Served, repository: Path, script: Path, options: Options
) -> tuple[dict[str, Any], list[loadgen.LoadResult]]:
    """`tritongen update` of `repository` into the running server while `script`'s load runs in
    wrk windows of `options.update_chunk_s` until it is done, plus one window after: (outcome:
    seconds, returncode, output; the windows)."""
    command = [
        sys.executable,
        "-m",
        "generator.cli",
        "update",
        "--repository",
        str(repository),
        "--url",
        served.url,
        "--admin-key",
        served.key,
        "--state",
        str(served.state),
    ]
    outcome: dict[str, Any] = {}

    def run_update() -> None:
        began = time.monotonic()
        process = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT, check=False)
        outcome.update(
            seconds=time.monotonic() - began, returncode=process.returncode, output=process.stdout + process.stderr
        )

    updater = threading.Thread(target=run_update, name="tritongen-update")
    url = f"http://{served.url}/"
    chunks: list[loadgen.LoadResult] = []
    while not chunks or updater.is_alive() or not outcome:
        start = updater.start if not chunks else None
        chunks.append(loadgen.wrk(url, script, options.concurrency, options.update_chunk_s, start))
        bench.log(
            f"update: load {len(chunks)}: {chunks[-1].rps:.1f} req/s, p99 {chunks[-1].p99_ms:.0f} ms, "
            f"{chunks[-1].errors} failed{'' if updater.is_alive() else ' (update done)'}"
        )
        if len(chunks) > 60:
            break
    updater.join()
    chunks.append(loadgen.wrk(url, script, options.concurrency, options.update_chunk_s))  # after the swap
    return outcome, chunks


# --- growth: 1 -> N models on one running server -----------------------------------------------


@dataclass(frozen=True)
class GrowthTargets:
    """What adding models one at a time to a running server must keep (against its first step)."""

    failed: int = 0
    """Failed requests over every update and measurement."""
    zipf_rps_ratio: float = 0.9
    """Zipf throughput with every model >= this x the single-model step's."""
    zipf_p99_ratio: float = 1.5
    """Zipf p99 with every model <= this x the single-model step's."""


def grow(bench: Bench, specs: list[dict[str, Any]], options: Options) -> list[dict[str, Any]]:
    """Serve the first spec alone and measure it, then add the others one at a time to the same
    server: regenerate with one more spec, `tritongen update` under the Zipf load over the models
    already served, check the new model's answers, measure the Zipf mix over all of them."""
    folder = bench.workdir / "grow"
    said: list[str] = []
    repository, generate_s = generate_repository(folder, specs[:1], bench.cores, bench.log, options.memory_mib, said)
    served, loading = serve(repository, bench.workdir, options, bench.log)
    steps: list[dict[str, Any]] = []
    try:
        check_answers(served.url, repository, specs[:1], bench.texts)
        first = {"generate_s": generate_s, "ready_s": loading.ready_s, "generate": said}
        steps.append(growth_step(bench, served, repository, specs[:1], options, first))
        for count in range(2, len(specs) + 1):
            said = []
            repository, generate_s = generate_repository(
                folder, specs[:count], bench.cores, bench.log, options.memory_mib, said
            )
            outcome, chunks = update_during_load(bench, served, repository, Path(steps[-1]["script"]), options)
            update = {
                "seconds": outcome.get("seconds", 0.0),
                "returncode": outcome.get("returncode"),
                "refused": "refused:" in outcome.get("output", ""),
                "loaded": re.findall(r"^loaded (\S+)", outcome.get("output", ""), re.MULTILINE),
                "requests": sum(c.requests for c in chunks),
                "failed": sum(c.errors for c in chunks),
                "p99_ms_max": max(c.p99_ms for c in chunks),
            }
            bench.log(
                f"grow: {count} models: update exit {update['returncode']} in {update['seconds']:.1f}s, "
                f"{update['failed']} failed of {update['requests']} requests meanwhile"
            )
            if update["returncode"] != 0:
                steps.append({"models": count, "update": update, "output": outcome.get("output", "")[-2000:]})
                break
            check_answers(served.url, repository, specs[count - 1 : count], bench.texts)  # the new one, its file
            step = {"generate_s": generate_s, "generate": said, "update": update}
            if count == len(specs) or not options.measure_at or count in options.measure_at:
                steps.append(growth_step(bench, served, repository, specs[:count], options, step))
            else:
                steps.append({**step, "models": count, "script": growth_script(bench, specs[:count])})
    finally:
        served.stop()
    return steps


def growth_step(
    bench: Bench, served: Served, repository: Path, specs: list[dict[str, Any]], options: Options, row: dict[str, Any]
) -> dict[str, Any]:
    """The Zipf mix over `specs` on the running server (warm-up, then `options.seconds`), its
    process tree's memory and threads, and the layout the repository gives its models."""
    label = f"grow-{len(specs)}"
    script = growth_script(bench, specs)
    running = served.running(label)
    cell = measure(bench, running, "http", options.concurrency, options.seconds, wrk_load(running, script), False)
    manifest = read_manifest(repository)
    inference = [manifest.models[manifest.inference_model(spec["name"])] for spec in specs]
    return {
        **row,
        "models": len(specs),
        "load": asdict(cell),
        "script": str(script),
        "instances": sum(model.instances or 0 for model in inference),
        "hottest": f"{inference[0].instances} x {inference[0].threads}",
        "server_setting_changes": [line for line in row.get("generate", []) if line.startswith("server setting")],
        "breakdown": process_breakdown(served.server.process.pid, repository),
    }


def growth_script(bench: Bench, specs: list[dict[str, Any]]) -> Path:
    """The wrk script of the Zipf mix over the online entry points of `specs`."""
    names = [spec["name"] for spec in specs]
    return http_script(bench, f"grow-{len(specs)}", lambda n: f"/v2/models/{n}/infer", loadgen.kserve_body, names)


def evaluate_growth(steps: list[dict[str, Any]], targets: GrowthTargets = GrowthTargets()) -> list[dict[str, Any]]:
    """The growth targets on this run: (name, value, limit, met, detail)."""
    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float, met: bool, detail: str) -> None:
        out.append({"target": name, "value": value, "limit": limit, "met": met, "detail": detail})

    updates = [step["update"] for step in steps if "update" in step]
    failed = sum(u["failed"] for u in updates) + sum(step["load"]["errors"] for step in steps if "load" in step)
    requests = sum(u["requests"] for u in updates) + sum(step["load"]["requests"] for step in steps if "load" in step)
    detail = f"{failed} of {requests}"
    add(f"{targets.failed} failed requests", failed, targets.failed, failed <= targets.failed, detail)
    restarts = [step["models"] for step in steps if "update" in step and step["update"]["returncode"] != 0]
    changed = [step["models"] for step in steps if step.get("server_setting_changes")]
    add(
        "every model added by `tritongen update`, no restart",
        len(restarts) + len(changed),
        0,
        not restarts and not changed,
        f"updates that failed or refused at {restarts or 'no step'}; server settings changed at {changed or 'no step'}",
    )
    first, last = steps[0], steps[-1]
    if "load" in first and "load" in last and last is not first:
        ratio = last["load"]["rps"] / first["load"]["rps"]
        add(
            f"Zipf throughput with {last['models']} models >= {targets.zipf_rps_ratio} x single",
            ratio,
            targets.zipf_rps_ratio,
            ratio >= targets.zipf_rps_ratio,
            f"{last['load']['rps']:.1f} vs {first['load']['rps']:.1f} req/s = {ratio:.2f}",
        )
        ratio = last["load"]["p99_ms"] / first["load"]["p99_ms"]
        add(
            f"Zipf p99 with {last['models']} models <= {targets.zipf_p99_ratio} x single",
            ratio,
            targets.zipf_p99_ratio,
            ratio <= targets.zipf_p99_ratio,
            f"{last['load']['p99_ms']:.0f} vs {first['load']['p99_ms']:.0f} ms = {ratio:.2f}",
        )
    return out


def growth_markdown(data: dict[str, Any]) -> str:
    """The growth table (one row per step) and the targets."""
    steps = data["steps"]
    single = steps[0]["load"]
    lines = [
        f"# bench.many --grow: 1 -> {steps[-1]['models']} classifiers"
        + (f" ({data['quantize']})" if data.get("quantize") else "")
        + f" added to one running `local` server ({data['cores']} cores, memory budget {data['memory_mib']} MiB, "
        f"{data['host']}, load average at start {' '.join(data['load_average'])})",
        "",
        "| models | hottest instances x threads | inference instances | update s | failed during update | "
        "req/s | x single | p50 ms | p99 ms | x single | PSS MiB | PSS / extra model | threads | processes | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for step in steps:
        update = step.get("update")
        during = f"{update['failed']} of {update['requests']}" if update else "-"
        seconds = f"{update['seconds']:.1f}" if update else "(start)"
        if "load" not in step:
            what = "not measured" if update["returncode"] == 0 else f"update exit {update['returncode']}"
            lines.append(f"| {step['models']} | - | - | {seconds} | {during} | {what} |")
            continue
        load = step["load"]
        extra = f"{(load['pss_mb'] - single['pss_mb']) / (step['models'] - 1):.1f}" if step["models"] > 1 else "-"
        lines.append(
            f"| {step['models']} | {step['hottest']} | {step['instances']} | {seconds} | {during} | "
            f"{load['rps']:.1f} | {load['rps'] / single['rps']:.2f} | {load['p50_ms']:.0f} | {load['p99_ms']:.0f} | "
            f"{load['p99_ms'] / single['p99_ms']:.2f} | {load['pss_mb']:.0f} | {extra} | {load['threads']} | "
            f"{load['processes']} | {load['errors']} |"
        )
    lines += [
        "",
        f"Zipf (s=1) mix at c={data['concurrency']} over the models served, {data['seconds']:.0f} s after "
        f"{data['warmup_s']:.0f} s of warm-up per step (wrk, KServe v2 JSON, bench corpus); memory, threads and "
        "processes of the server's process tree over the measurement; `failed during update`: every request of the "
        "load over the models already served while `tritongen update` added the new one, plus one window after.",
        "",
        "## Targets",
        "",
    ]
    for target in data["targets"]:
        lines.append(f"- {target['target']}: **{'MET' if target['met'] else 'MISSED'}** ({target['detail']})")
    lines += ["", *(f"- note: {n}" for n in data["notes"])]
    return "\n".join(lines) + "\n"


def main_grow(bench: Bench, specs: list[dict[str, Any]], options: Options, output: Path, data: dict[str, Any]) -> int:
    """`--grow`: run `grow`, write results-grow.{json,md}, print the table; 0 when every target is met."""
    steps = grow(bench, specs, options)
    data = {**data, "memory_mib": options.memory_mib, "steps": steps, "targets": evaluate_growth(steps)}
    data["notes"].append(
        f"machine MemAvailable at the end {mem_available_mib():.0f} MiB; load average at the end "
        f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])} (a shared machine: compare within a run)"
    )
    (output / "results-grow.json").write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    text = growth_markdown(data)
    (output / "results-grow.md").write_text(text, encoding="utf-8")
    print(text)
    return 0 if all(t["met"] for t in data["targets"]) else 1


# --- report ------------------------------------------------------------------------------------


def evaluate(single: dict[str, Any], many: dict[str, Any], targets: Targets = Targets()) -> list[dict[str, Any]]:
    """The catalogue's targets on this run: (name, value, limit, met)."""
    out: list[dict[str, Any]] = []
    count = many["models"]

    def add(name: str, value: float | None, limit: float, met: bool | None, detail: str) -> None:
        out.append({"target": name, "value": value, "limit": limit, "met": met, "detail": detail})

    if "failed" in many:
        add(f"{count} models ready <= {targets.ready_s:.0f} s", None, targets.ready_s, False, many["failed"])
        return out
    ready = many["ready_s"]
    note = "" if count == 100 else f" (the target is for 100 models; this run has {count})"
    add(
        f"{count} models ready <= {targets.ready_s:.0f} s",
        ready,
        targets.ready_s,
        ready <= targets.ready_s,
        f"{ready:.1f} s{note}",
    )
    if "load" in single and "load" in many and count > 1:
        extra = (many["load"]["pss_mb"] - single["load"]["pss_mb"]) / (count - 1)
        add(
            f"PSS <= {targets.pss_per_extra_mib:.0f} MiB per extra model",
            extra,
            targets.pss_per_extra_mib,
            extra <= targets.pss_per_extra_mib,
            f"({many['load']['pss_mb']:.0f} - {single['load']['pss_mb']:.0f}) / {count - 1} = {extra:.1f} MiB",
        )
    if "load" in many:
        per_model = many["load"]["threads"] / count
        add(
            f"<= {targets.threads_per_model:.0f} threads per model",
            per_model,
            targets.threads_per_model,
            per_model <= targets.threads_per_model,
            f"{many['load']['threads']} / {count} = {per_model:.1f}",
        )
    if "load" in single and "load" in many:
        ratio = many["load"]["rps"] / single["load"]["rps"]
        add(
            f"Zipf throughput >= {targets.zipf_rps_ratio} x single",
            ratio,
            targets.zipf_rps_ratio,
            ratio >= targets.zipf_rps_ratio,
            f"{many['load']['rps']:.1f} vs {single['load']['rps']:.1f} req/s = {ratio:.2f}",
        )
        ratio = many["load"]["p99_ms"] / single["load"]["p99_ms"]
        add(
            f"Zipf p99 <= {targets.zipf_p99_ratio} x single",
            ratio,
            targets.zipf_p99_ratio,
            ratio <= targets.zipf_p99_ratio,
            f"{many['load']['p99_ms']:.0f} vs {single['load']['p99_ms']:.0f} ms = {ratio:.2f}",
        )
    update = many.get("update")
    if update:
        ok = update["failed"] == targets.update_failed and update["returncode"] == 0 and update["serves_new_head"]
        add(
            "one model updated under load: 0 failed",
            update["failed"],
            targets.update_failed,
            ok,
            f"{update['failed']} failed of {update['requests']} requests; update exit {update['returncode']} in "
            f"{update['update_s']:.1f}s; new head served: {update['serves_new_head']}",
        )
    return out


def _kind(row: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((g for g in row.get("breakdown", []) if g["kind"] == kind), None)


def markdown(data: dict[str, Any]) -> str:
    """Results table, targets, process breakdown, loading and update details."""
    runs = data["runs"]
    single = runs[0]
    lines = [
        f"# bench.many: {runs[-1]['models']} classifiers"
        + (f" ({data['quantize']})" if data.get("quantize") else "")
        + " on one `local` server"
        + (f" (tritonserver {' '.join(data['server_args'])})" if data.get("server_args") else "")
        + f" ({data['cores']} cores, "
        f"{data['host']}, load average at start {' '.join(data['load_average'])})",
        "",
        "| run | models | Triton models | ready s | PSS MiB | RSS MiB | PSS / extra model | threads | "
        "threads / model | processes | req/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in runs:
        if "load" not in row:
            lines.append(f"| {row['run']} | {row['models']} | - | FAILED: {row.get('failed', '?')[:200]} |")
            continue
        load = row["load"]
        extra = "-"
        if row is not single and "load" in single and row["models"] > 1:
            extra = f"{(load['pss_mb'] - single['load']['pss_mb']) / (row['models'] - 1):.1f}"
        lines.append(
            f"| {row['run']} | {row['models']} | {row['triton_models']} | {row['ready_s']:.1f} | "
            f"{load['pss_mb']:.0f} | {load['rss_mb']:.0f} | {extra} | {load['threads']} | "
            f"{load['threads'] / row['models']:.1f} | {load['processes']} | {load['rps']:.1f} | "
            f"{load['p50_ms']:.0f} | {load['p99_ms']:.0f} | {load['errors']} |"
        )
    lines += [
        "",
        f"Zipf (s=1) mix at c={data['concurrency']}, {data['seconds']:.0f} s after {data['warmup_s']:.0f} s "
        "of warm-up (wrk, KServe v2 JSON, bench corpus); memory, threads, processes of the server's "
        "process tree at the end of the measurement.",
        "",
        "## Targets",
        "",
    ]
    for target in data["targets"]:
        verdict = {True: "MET", False: "MISSED", None: "-"}[target["met"]]
        lines.append(f"- {target['target']}: **{verdict}** ({target['detail']})")
    for row in runs:
        if "breakdown" not in row:
            continue
        lines += [
            "",
            f"## {row['run']}: server process tree by kind (under load)",
            "",
            "| kind | processes | threads | PSS MiB | PSS / process | RSS MiB |",
            "|---|---|---|---|---|---|",
        ]
        for group in row["breakdown"]:
            lines.append(
                f"| {group['kind']} | {group['processes']} | {group['threads']} | {group['pss_mib']:.0f} | "
                f"{group['pss_per_process_mib']:.1f} | {group['rss_mib']:.0f} |"
            )
        server_threads = _kind(row, "tritonserver")
        if row is not single and server_threads and _kind(single, "tritonserver"):
            base = _kind(single, "tritonserver")
            assert base is not None
            per = (server_threads["threads"] - base["threads"]) / max(row["triton_models"] - single["triton_models"], 1)
            lines += [
                "",
                f"tritonserver's own threads: {base['threads']} with {single['triton_models']} Triton models, "
                f"{server_threads['threads']} with {row['triton_models']}: {per:.1f} per extra Triton model.",
            ]
        queues = row.get("queues")
        if queues:
            hot, others = queues["hottest"], queues["others"]
            share = hot["requests"] / max(hot["requests"] + others["requests"], 1)
            lines += [
                "",
                f"Triton statistics over the Zipf load (warm-up + measurement), inference models: the hottest "
                f"({share:.0%} of requests) waited {hot['queue_ms']:.0f} ms per request in its queue, batches "
                f"of {hot['batch']:.1f}, {hot['compute_ms_per_batch']:.0f} ms compute per batch"
                + (
                    f"; the other {others['models']}: {others['queue_ms']:.0f} ms, batches of {others['batch']:.1f}, "
                    f"{others['compute_ms_per_batch']:.0f} ms per batch."
                    if others["models"]
                    else "."
                ),
            ]
        loading = row["loading"]
        done = sorted(loading["loaded_at"].values())
        if done:
            quartiles = ", ".join(f"{q}%: {done[max(0, int(len(done) * q / 100) - 1)]:.0f}s" for q in (25, 50, 75, 100))
            lines += [
                "",
                f"Loading: {loading['triton_models']} Triton models, all loaded (server log) at {quartiles}; "
                f"ready {loading['ready_s']:.1f} s after start; content index before start {loading['index_s']:.1f} s; "
                f"generate {row['generate_s']:.0f} s; {row['distinct_weight_files']} distinct model files "
                f"(sha256) for {row['models']} models; {row['answers']['distinct_logits']} distinct LOGITS "
                f"for one text over {row['answers']['answered']} models.",
            ]
        update = row.get("update")
        if update:
            lines += [
                "",
                f"Update under load: {update['model']} ({update['change']}), regenerated in "
                f"{update['generate_s']:.0f} s, `tritongen update` {update['update_s']:.1f} s "
                + (
                    f"({update['update_s'] - update['apply_s']:.1f} s content index and plan, "
                    f"{update['apply_s']:.1f} s loading) "
                    if update.get("apply_s") is not None
                    else ""
                )
                + f"(exit {update['returncode']}: {update['summary']}; loaded {', '.join(update['loaded'])}); "
                f"load meanwhile {update['rps']:.1f} req/s, worst p99 {update['p99_ms_max']:.0f} ms, "
                f"**{update['failed']} failed** of {update['requests']}; new head served: {update['serves_new_head']}.",
            ]
    lines += ["", *(f"- note: {n}" for n in data["notes"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.many", description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=100, help="classifiers in the catalogue (default 100)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement seconds (default 20)")
    parser.add_argument("--warmup", type=float, default=5.0, help="warm-up seconds before each measurement")
    parser.add_argument("--no-update", action="store_true", help="skip the update under load")
    parser.add_argument(
        "--prepare", action="store_true", help="only generate the N-model repository (builds the models)"
    )
    parser.add_argument("--quantize", default=None, help="model.quantize of every classifier (e.g. dynamic_int8)")
    parser.add_argument("--cores", type=int, default=None, help="CPU budget (default: detected)")
    parser.add_argument("--ready-timeout", type=float, default=900.0)
    parser.add_argument(
        "--min-available", type=float, default=2048.0, help="MiB of free memory below which loading is stopped"
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra tritonserver argument for both runs, repeatable "
        "(e.g. --server-arg=--backend-config=onnxruntime,thread-pool-size=1)",
    )
    parser.add_argument(
        "--grow",
        action="store_true",
        help="add the models one at a time to one running server (tritongen update, no restart) under the Zipf "
        "load, measuring each step against the single-model step",
    )
    parser.add_argument(
        "--memory-mib",
        type=int,
        default=DEFAULT_MEMORY_MIB,
        help=f"the repository budget's memory, repository.yaml's memory_mib (default {DEFAULT_MEMORY_MIB})",
    )
    parser.add_argument(
        "--measure-at",
        default="",
        help="--grow: comma-separated model counts whose Zipf mix is measured (default: every count; the first "
        "and last always); every addition runs under load either way",
    )
    parser.add_argument(
        "--update-chunk", type=float, default=10.0, help="seconds of each load window while an update runs"
    )
    parser.add_argument("--output", type=Path, default=None, help="results folder")
    args = parser.parse_args(argv)
    try:
        measure_at = tuple(int(count) for count in args.measure_at.split(",") if count.strip())
    except ValueError:
        parser.error(f"--measure-at takes model counts separated by commas, not {args.measure_at!r}")
    if args.models < 2:
        parser.error("--models must be at least 2 (the single-model run is always part of the run)")
    options = Options(
        models=args.models,
        concurrency=args.concurrency,
        seconds=args.seconds,
        warmup_s=args.warmup,
        ready_timeout_s=args.ready_timeout,
        min_available_mib=args.min_available,
        cores=args.cores or detected_cores(),
        update=not args.no_update,
        server_args=tuple(args.server_arg),
        memory_mib=args.memory_mib,
        measure_at=measure_at,
        update_chunk_s=args.update_chunk,
    )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    output = args.output or RESULTS / f"many-{stamp}"
    workdir = output / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    profile = Profile(concurrency=(options.concurrency,), warmup_s=options.warmup_s, seconds=options.seconds)
    bench = Bench(profile, workdir, options.cores, corpus.sentences())
    started = time.monotonic()
    load_average = Path("/proc/loadavg").read_text().split()[:3]
    bench.log(
        f"{platform.node()}: {options.cores} cores, load average {load_average}, {options.models} models"
        + (f", quantize {args.quantize}" if args.quantize else "")
    )
    specs = catalogue(options.models, args.quantize)
    if args.prepare:
        _, seconds = generate_repository(
            workdir / f"{options.models}-models", specs, options.cores, bench.log, options.memory_mib
        )
        bench.log(f"generated {options.models} models in {seconds:.0f}s")
        return 0
    notes: list[str] = []
    if args.grow:
        common = {
            "host": platform.node(),
            "cores": options.cores,
            "load_average": load_average,
            "quantize": args.quantize,
            "concurrency": options.concurrency,
            "seconds": options.seconds,
            "warmup_s": options.warmup_s,
            "notes": notes,
        }
        return main_grow(bench, specs, options, output, common)
    runs: list[dict[str, Any]] = []
    single, served, _ = run_once(bench, "1-model", specs[:1], options)
    if served is not None:
        served.stop()
    runs.append(single)
    many, served, _ = run_once(bench, f"{options.models}-models", specs, options)
    try:
        if served is not None and options.update and "script" in many:
            many["update"] = update_under_load(
                bench, served, workdir / f"{options.models}-models", specs, options, Path(many["script"])
            )
        if served is not None:
            many["after"] = tree_memory(served.server.process.pid)
    finally:
        if served is not None:
            served.stop()
    runs.append(many)
    notes.append(
        f"machine MemAvailable at the end {mem_available_mib():.0f} MiB; load average at the end "
        f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])} (a shared 2-core machine: compare within a run)"
    )
    data: dict[str, Any] = {
        "host": platform.node(),
        "cores": options.cores,
        "load_average": load_average,
        "quantize": args.quantize,
        "server_args": list(options.server_args),
        "concurrency": options.concurrency,
        "seconds": options.seconds,
        "warmup_s": options.warmup_s,
        "runs": runs,
        "targets": evaluate(single, many),
        "notes": notes,
        "elapsed_s": time.monotonic() - started,
    }
    (output / "results.json").write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    text = markdown(data)
    (output / "results.md").write_text(text, encoding="utf-8")
    print(text)
    bench.log(f"results in {output} ({time.monotonic() - started:.0f}s)")
    return 0 if all(t["met"] for t in data["targets"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
