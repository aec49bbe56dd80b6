"""`tritongen tune`: measure an ensemble on the real server and propose its CPU settings.

For one spec it varies the typed spec in memory and generates a candidate repository from
each variant (the real generator, a temporary folder; no spec file is written), serves each on
the embedded tritonserver, drives the online entry point (from the manifest) with a
closed-loop gRPC load of sample texts, and reads Triton's statistics extension
(`/v2/models/<m>/stats`) for every stage: preprocessing cost per request, inference cost
per batch size, queue time per request, average batch. The search is coordinate descent
over, in order:

1. instance layout: inference instances x intra-op threads using the CPU budget,
2. padding: `batch_longest` or length buckets derived from the sample texts' token lengths,
   and, when the default version's model is built by an encoder builder (`sentence_embedding`,
   `prototype_classifier`) in a padded format, the ragged variant of that format (an
   unpadded encoder with `padding: none`, requests of every length batched together),
3. batching: max queue delay x preferred batch sizes (none, or the powers of two up to the
   largest batch the model formed under load),

keeping at each step the candidate with the highest throughput whose p99 meets the bound
(else the lowest p99); a candidate replaces the current best only when more than 5% better.
`--write` writes the winner into the spec YAML once, at the end, changing only the lines of
the fields that differ (comments stay).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from generator.base.launch import ServerOptions, ServerPorts
from generator.kinds.formats import FORMATS
from generator.kinds.preprocessing import PreprocessingSettings, get_preprocessor
from generator.kinds.preprocessing.textprep import TextPrepSettings
from generator.pipeline.generate import DEFAULT_SPECS, GenerateOptions, generate
from generator.pipeline.manifest import read_manifest
from generator.pipeline.plan import detected_cores, plan_cpu
from generator.pipeline.spec import (
    SENTENCE_TRANSFORMER_BUILDERS,
    ModelSpec,
    SpecError,
    format_validation_error,
    parse_spec,
)
from generator.serving.ports import free_ports
from generator.serving.process import running_server
from generator.serving.yaml_edit import YamlEditError, apply_changes, model_changes

DELAYS_US = (0, 500, 2000)


@dataclass
class StageStats:
    """One Triton model's statistics over a measurement window (deltas)."""

    requests: int = 0
    executions: int = 0
    queue_ms: float = 0.0
    """Mean queue wait per request."""
    compute_ms_per_request: float = 0.0
    """Execution time per request: the time of each execution divided among its batch."""
    compute_ms_per_batch: dict[int, float] = field(default_factory=dict)
    """Batch size -> mean compute time of one execution of that size."""
    batches: dict[int, int] = field(default_factory=dict)
    """Batch size -> executions of that size."""

    @property
    def average_batch(self) -> float:
        return self.requests / self.executions if self.executions else 0.0


@dataclass
class Trial:
    """One candidate configuration, measured."""

    label: str
    spec: ModelSpec
    """The candidate spec (environments kept: generation strips them, `--write` does not)."""
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    errors: int = 0
    stages: dict[str, StageStats] = field(default_factory=dict)
    """Statistics of the entry point and each model it runs, by model name."""
    entry_point: str = ""
    """The online entry point measured (from the repository's manifest)."""
    inference_model: str = ""
    """The inference model the entry point runs (from the repository's manifest)."""


# --- sample texts and load ------------------------------------------------------------------


def bucket_choices(lengths: list[int], max_length: int) -> list[tuple[int, ...]]:
    """Bucket lists from the token-length distribution: quartiles and halves, rounded up to 8."""

    def round8(value: int) -> int:
        return min(max_length, -(-value // 8) * 8)

    choices = []
    for parts in (4, 2):
        edges = {round8(lengths[min(len(lengths) - 1, len(lengths) * k // parts)]) for k in range(1, parts)}
        edges |= {round8(lengths[-1]), max_length}
        choices.append(tuple(sorted(edges)))
    return list(dict.fromkeys(choices))


async def _drive(url: str, model: str, texts: list[str], concurrency: int, seconds: float) -> tuple[list[float], int]:
    import numpy as np
    from tritonclient.grpc import aio as grpcclient

    client = grpcclient.InferenceServerClient(url)
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds

    async def worker(offset: int) -> None:
        nonlocal errors
        index = offset
        while time.monotonic() < deadline:
            tensor = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
            tensor.set_data_from_numpy(np.array([[texts[index % len(texts)].encode()]], dtype=object))
            index += 7919
            started = time.perf_counter()
            try:
                await client.infer(model, [tensor])
                latencies.append(time.perf_counter() - started)
            except Exception:  # noqa: BLE001 - count any failed request
                errors += 1

    try:
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    finally:
        await client.close()
    return latencies, errors


def drive(url: str, model: str, texts: list[str], concurrency: int, seconds: float) -> tuple[float, float, float, int]:
    """Closed-loop load over gRPC: (req/s, p50 ms, p99 ms, errors)."""
    started = time.monotonic()
    latencies, errors = asyncio.run(_drive(url, model, texts, concurrency, seconds))
    elapsed = time.monotonic() - started
    if not latencies:
        return 0.0, 0.0, 0.0, errors
    latencies.sort()

    def percentile(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

    return len(latencies) / elapsed, percentile(50), percentile(99), errors


# --- statistics ------------------------------------------------------------------------------


def model_stats(http_url: str, model: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{http_url}/v2/models/{model}/stats", timeout=10) as response:
        data: dict[str, Any] = json.loads(response.read())["model_stats"][0]
        return data


def stage_delta(before: dict[str, Any], after: dict[str, Any]) -> StageStats:
    """Per-request and per-batch-size costs between two statistics snapshots of one model."""

    def ns(stats: dict[str, Any], key: str) -> int:
        return int(stats["inference_stats"][key]["ns"])

    requests = int(after["inference_count"]) - int(before["inference_count"])
    executions = int(after["execution_count"]) - int(before["execution_count"])
    stage = StageStats(requests=requests, executions=executions)
    if requests:
        stage.queue_ms = (ns(after, "queue") - ns(before, "queue")) / requests / 1e6
        compute = sum(ns(after, k) - ns(before, k) for k in ("compute_input", "compute_infer", "compute_output"))
        stage.compute_ms_per_request = compute / requests / 1e6
    old = {b["batch_size"]: b for b in before.get("batch_stats", [])}
    for batch in after.get("batch_stats", []):
        size = int(batch["batch_size"])
        previous = old.get(size)
        count = int(batch["compute_infer"]["count"]) - (int(previous["compute_infer"]["count"]) if previous else 0)
        if count <= 0:
            continue
        total = sum(
            int(batch[k]["ns"]) - (int(previous[k]["ns"]) if previous else 0)
            for k in ("compute_input", "compute_infer", "compute_output")
        )
        stage.batches[size] = count
        stage.compute_ms_per_batch[size] = total / count / 1e6
    if stage.batches and requests:
        # inference_stats charge each request its whole batch's time; batch_stats do not.
        stage.compute_ms_per_request = (
            sum(n * stage.compute_ms_per_batch[b] for b, n in stage.batches.items()) / requests
        )
    return stage


# --- candidates ------------------------------------------------------------------------------


def layouts(cores: int) -> list[tuple[int, int]]:
    """(instances, threads) pairs whose product is the core budget (threads 1, 2 or 4)."""
    pairs = [(cores // t, t) for t in (1, 2, 4) if t <= cores and cores % t == 0]
    return pairs or [(1, cores)]


def with_settings(
    spec: ModelSpec,
    *,
    instances: tuple[int, int] | None = None,
    format_name: str | None = None,
    padding: tuple[str, tuple[int, ...]] | None = None,
    delay_us: int | None = None,
    preferred: tuple[int, ...] | None = None,
) -> ModelSpec:
    """The spec with tuned settings applied to the online entry point (its default version):
    `instances` (instances, threads), the default version's format (`format_name`), its `padding`
    (padding, buckets), the batcher's `delay_us` and `preferred` batch sizes.

    A new spec validated whole (`model_copy(update=...)` would skip the validators): a SpecError
    names the field when the combination is not a valid spec."""
    data = spec.model_dump()
    default = next(v for v in data["versions"] if v["version"] == spec.default_version)
    if instances is not None:
        data["instances"].update(model=instances[0], model_threads=instances[1])
    if format_name is not None:
        default["model"]["format"] = format_name
    if padding is not None:
        default["preprocessing"].update(padding=padding[0], buckets=padding[1])
    if delay_us is not None:
        data["batching"]["max_queue_delay_us"] = delay_us
    if preferred is not None:
        data["batching"]["preferred_batch_sizes"] = preferred
    return _validated(spec.name, data)


def _validated(name: str, data: dict[str, Any]) -> ModelSpec:
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(format_validation_error(f"{name} (tuned candidate)", error)) from None


def ragged_candidate(spec: ModelSpec) -> ModelSpec | None:
    """The spec with its default version served by the ragged variant of its format and
    `padding: none`, when its model is built by an encoder builder in a padded format (and the
    result is a valid spec); else None."""
    model = spec.version(spec.default_version).model
    inference_format = FORMATS[model.format]
    if inference_format.ragged_variant is None or model.build.builder not in SENTENCE_TRANSFORMER_BUILDERS:
        return None
    try:
        return with_settings(spec, format_name=inference_format.ragged_variant, padding=("none", ()))
    except SpecError:
        return None


def ragged_label(spec: ModelSpec) -> str:
    """How the report names a ragged candidate."""
    return f"ragged: {spec.version(spec.default_version).model.format}, padding none"


SERVER_PYTHON_KEYS = ("environment", "environment_format", "ship_stub")
"""The preprocessing settings of a packed execution environment (`strip_environments` resets them)."""


def strip_environments(spec: ModelSpec) -> ModelSpec:
    """Preprocessing in the server's own Python (tuning measures CPU cost, not packaging)."""
    data = spec.model_dump()
    for version in data["versions"]:
        version["preprocessing"].update(
            {key: PreprocessingSettings.model_fields[key].default for key in SERVER_PYTHON_KEYS}
        )
    return _validated(spec.name, data)


@dataclass
class TuneOptions:
    spec_path: Path
    cores: int
    concurrency: int = 32
    p99_ms: float = 200.0
    seconds: float = 8.0
    warmup_s: float = 2.0
    texts: list[str] = field(default_factory=list)
    workdir: Path = Path(".")
    trials: list[Trial] = field(default_factory=list)
    """Every measured candidate, in order."""


def generate_candidate(spec: ModelSpec, folder: Path, cores: int) -> Path:
    """Generate the repository of one candidate spec (from memory: no spec file is written) into
    `folder/repository` and check its artifacts; return the repository. The spec is served alone
    on `cores`: `folder` holds no `repository.yaml`, so no other repository setting applies."""
    repository = folder / "repository"
    options = GenerateOptions(specs_dir=folder, output=repository, cores=cores, progress=lambda _: None)
    generate(options, [strip_environments(spec)])
    return repository


def measure(options: TuneOptions, label: str, spec: ModelSpec) -> Trial:
    """Generate the candidate, serve it, load it, and read every stage's statistics."""
    folder = Path(tempfile.mkdtemp(prefix="candidate-", dir=options.workdir))
    repository = generate_candidate(spec, folder, options.cores)
    manifest = read_manifest(repository)
    entry_point = manifest.entry_points("online", spec.name)[0].name
    steps = list(manifest.models[entry_point].depends_on)
    http, grpc, metrics = free_ports(3)
    server_options = ServerOptions(repository=repository, ports=ServerPorts(http, grpc, metrics), models=(entry_point,))
    trial = Trial(label, spec, entry_point=entry_point, inference_model=manifest.inference_model(entry_point))
    with running_server(server_options, folder, ready_timeout_s=300) as server:
        drive(server.grpc_url, entry_point, options.texts, options.concurrency, options.warmup_s)
        before = {m: model_stats(server.http_url, m) for m in [entry_point, *steps]}
        trial.rps, trial.p50_ms, trial.p99_ms, trial.errors = drive(
            server.grpc_url, entry_point, options.texts, options.concurrency, options.seconds
        )
        after = {m: model_stats(server.http_url, m) for m in [entry_point, *steps]}
    trial.stages = {m: stage_delta(before[m], after[m]) for m in before}
    options.trials.append(trial)
    print(describe(trial), flush=True)
    return trial


def describe(trial: Trial) -> str:
    lines = [
        f"  {trial.label:<48} {trial.rps:7.1f} req/s  p50 {trial.p50_ms:6.1f} ms  "
        f"p99 {trial.p99_ms:6.1f} ms  errors {trial.errors}"
    ]
    for model, stage in trial.stages.items():
        if model == trial.entry_point:
            lines.append(f"      {model:<30} ensemble: {stage.compute_ms_per_request:6.2f} ms/req inside the server")
            continue
        batches = ", ".join(f"{b}x{n}: {stage.compute_ms_per_batch[b]:.1f}ms" for b, n in sorted(stage.batches.items()))
        lines.append(
            f"      {model:<30} queue {stage.queue_ms:6.2f} ms/req  compute "
            f"{stage.compute_ms_per_request:6.2f} ms/req  avg batch {stage.average_batch:4.1f}"
            + (f"  [{batches}]" if batches else "")
        )
    return "\n".join(lines)


MARGIN = 0.05
"""A challenger must beat the incumbent by this fraction: closer results are measurement noise."""


def better(a: Trial, b: Trial, bound_ms: float) -> Trial:
    """The goal: highest throughput with p99 within the bound, else the lowest p99.

    `a` is the incumbent: it stays unless `b` is better by more than MARGIN.
    """
    a_ok, b_ok = a.p99_ms <= bound_ms and not a.errors, b.p99_ms <= bound_ms and not b.errors
    if a_ok != b_ok:
        return a if a_ok else b
    if a_ok:
        return b if b.rps > a.rps * (1 + MARGIN) else a
    return b if b.p99_ms < a.p99_ms * (1 - MARGIN) else a


def preferred_sizes(stage: StageStats, max_batch: int) -> tuple[int, ...]:
    """Powers of two up to the largest batch the model formed at least 3 times (at least 2)."""
    largest = max([s for s, n in stage.batches.items() if n >= 3] or [2])
    sizes, size = [], 2
    while size <= min(max_batch, max(2, largest)):
        sizes.append(size)
        size *= 2
    return tuple(sizes)


def tune(options: TuneOptions) -> Trial:
    """Coordinate descent over layout, padding and batching; returns the best trial."""
    spec = parse_spec(options.spec_path.read_text(encoding="utf-8"), str(options.spec_path))
    if spec.kind == "reranker":  # its entry points take (query, text) pairs, not the texts tune sends
        raise SpecError(f"{options.spec_path}: kind reranker: tune measures entry points of texts, not pairs")
    version = spec.version(spec.default_version)
    preprocessor = get_preprocessor(version.preprocessing.kind)
    if not options.texts:
        options.texts = preprocessor.sample_texts(version.preprocessing, count=1000, seed=7)
    lengths = sorted(preprocessor.token_lengths(version.preprocessing, options.texts))
    print(
        f"tune {spec.name}: {options.cores} cores, c={options.concurrency}, p99 bound "
        f"{options.p99_ms:.0f} ms; {len(options.texts)} texts of {lengths[0]}-{lengths[-1]} tokens "
        f"(median {lengths[len(lengths) // 2]})",
        flush=True,
    )
    planned = plan_cpu(spec, options.cores)
    print(
        f"generated today: {planned.model_instances} x {planned.model_threads} threads, "
        f"{planned.preprocess_instances} preprocessing instance(s)",
        flush=True,
    )

    print("step 1: instance layout (instances x intra-op threads)", flush=True)
    best: Trial | None = None
    for instances, threads in layouts(options.cores):
        candidate = with_settings(spec, instances=(instances, threads))
        trial = measure(options, f"{instances} instances x {threads} threads", candidate)
        best = trial if best is None else better(best, trial, options.p99_ms)
    assert best is not None

    print("step 2: padding (and the ragged variant)", flush=True)
    current = padding_of(best.spec)
    paddings: list[tuple[str, tuple[int, ...]]] = [("batch_longest", ())]
    paddings += [("buckets", b) for b in bucket_choices(lengths, version.preprocessing.max_length)]
    if current is None:
        print(f"  skipped: preprocessing {version.preprocessing.kind} has no padding setting", flush=True)
        paddings = []
    elif current[0] == "none":
        print("  skipped: the format takes unpadded tokens (padding: none)", flush=True)
        paddings = []
    for padding, buckets in paddings:
        if padding_of(best.spec) == (padding, buckets):
            continue  # measured in step 1 already
        candidate = with_settings(best.spec, padding=(padding, buckets))
        label = padding + (f" {','.join(map(str, buckets))}" if buckets else "")
        best = better(best, measure(options, label, candidate), options.p99_ms)
    ragged = ragged_candidate(best.spec)  # step 1's layout, unpadded
    if ragged is not None:
        best = better(best, measure(options, ragged_label(ragged), ragged), options.p99_ms)

    print("step 3: batching (max queue delay, preferred batch sizes)", flush=True)
    model_stage = best.stages.get(best.inference_model, StageStats())
    observed = preferred_sizes(model_stage, spec.batching.max_batch_size)
    for delay in DELAYS_US:
        for preferred in ((), observed):
            candidate = with_settings(best.spec, delay_us=delay, preferred=preferred)
            label = f"delay {delay} us, preferred {list(preferred) or 'none'}"
            best = better(best, measure(options, label, candidate), options.p99_ms)
    return best


def padding_of(spec: ModelSpec) -> tuple[str, tuple[int, ...]] | None:
    """(padding, buckets) of the default version; None when its preprocessing kind has no padding."""
    preprocessing = spec.version(spec.default_version).preprocessing
    if not isinstance(preprocessing, TextPrepSettings):
        return None
    return preprocessing.padding.value, tuple(preprocessing.buckets)


def proposal(best: Trial) -> dict[str, Any]:
    """The tuned sections of the spec, for the report (`--write` changes what differs)."""
    spec = best.spec
    result: dict[str, Any] = {
        "instances": spec.instances.model_dump(mode="json"),
        "batching": spec.batching.model_dump(mode="json"),
        "format": spec.version(spec.default_version).model.format,
    }
    padding = padding_of(spec)
    if padding is not None:
        result["padding"] = padding[0]
        if padding[1]:
            result["buckets"] = list(padding[1])
    return result


TUNED_HEADER = "# Tuned by `tritongen tune`: "


def tuned_text(text: str, source: str, tuned: ModelSpec) -> str:
    """The spec YAML `text` (named `source` in errors) with the fields that differ in `tuned`
    written into their lines (comments and layout stay); it must load as `tuned`."""
    edited = apply_changes(text, model_changes(parse_spec(text, source), tuned))
    if parse_spec(edited, source) != tuned:
        raise YamlEditError(f"{source}: the edited spec does not load as the tuned one")
    return edited


def write_spec(path: Path, best: Trial, summary: str) -> None:
    """Write the tuned spec into its YAML file, editing only the lines of the fields that
    change (`tuned_text`), under a `# Tuned by` first line; validated first."""
    lines = tuned_text(path.read_text(encoding="utf-8"), str(path), best.spec).splitlines(keepends=True)
    if lines and lines[0].startswith(TUNED_HEADER):
        lines = lines[1:]  # the previous run's summary
    text = f"{TUNED_HEADER}{summary}\n" + "".join(lines)
    parse_spec(text, str(path))
    path.write_text(text, encoding="utf-8")


def cmd_tune(args: argparse.Namespace) -> int:
    path = args.specs / f"{args.spec}.yaml"
    texts = []
    if args.texts:
        texts = [line.strip() for line in args.texts.read_text(encoding="utf-8").splitlines() if line.strip()]
    with tempfile.TemporaryDirectory(prefix="tritongen-tune-") as workdir:
        options = TuneOptions(
            spec_path=path,
            cores=args.cores or detected_cores(),
            concurrency=args.concurrency,
            p99_ms=args.p99_ms,
            seconds=args.seconds,
            texts=texts,
            workdir=Path(workdir),
        )
        best = tune(options)
    summary = (
        f"{best.rps:.1f} req/s, p99 {best.p99_ms:.0f} ms at c={args.concurrency} on "
        f"{options.cores} cores ({best.label}), {time.strftime('%Y-%m-%d')}"
    )
    print(f"\nbest: {summary}\nproposed settings:\n" + yaml.safe_dump(proposal(best), sort_keys=False))
    if best.p99_ms > args.p99_ms:
        print(f"note: no candidate met the p99 bound of {args.p99_ms:.0f} ms; this one has the lowest p99")
    if args.write:
        write_spec(path, best, summary)
        print(f"wrote {path}; run `tritongen generate` to apply")
    return 0


def add_tune_subcommand(subparsers: Any) -> None:
    """Register `tritongen tune` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "tune",
        help="measure an ensemble on the real server and propose instances, batching, padding",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("spec", help="spec name (models/<spec>.yaml)")
    parser.add_argument("--specs", type=Path, default=DEFAULT_SPECS, help="spec folder (default: models/)")
    parser.add_argument("--cores", type=int, default=None, help="CPU budget (default: detected)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent clients of the load (default 32)")
    parser.add_argument("--p99-ms", type=float, default=200.0, help="p99 latency bound of the goal (default 200)")
    parser.add_argument("--seconds", type=float, default=8.0, help="measurement seconds per candidate")
    parser.add_argument(
        "--texts", type=Path, default=None, help="sample texts, one per line (default: seeded 8-40-word sentences)"
    )
    parser.add_argument("--write", action="store_true", help="write the best settings into the spec YAML")
    parser.set_defaults(func=cmd_tune)


def main(argv: list[str] | None = None) -> int:
    """`python -m generator.serving.tune SPEC ...` (the same as `tritongen tune`)."""
    parser = argparse.ArgumentParser(prog="python -m generator.serving.tune")
    add_tune_subcommand(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["tune", *(argv if argv is not None else __import__("sys").argv[1:])])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
