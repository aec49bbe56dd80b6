"""Plan: validated specs -> the Triton models to generate (names, tensors, instances, threads).

Naming scheme (one Triton model per version, because `config.pbtxt` is shared by all
versions of a Triton model and each version needs its own preprocessing parameters and
execution environment):

    <name>                  ensemble, default version, online entry point (latency first)
    <name>_batch            ensemble, default version, bulk entry point (throughput first)
    <name>_v<N>             ensemble of version N (pin a version)
    <name>_v<N>_pre         preprocessing of version N (python backend, tokenization)
    <name>_v<N>_model       inference model of version N, online batching
    <name>_v<N>_model_bulk  inference model of the default version, bulk batching

Every Triton model has the single Triton version `1`.

CPU budget rule (cores C, see `plan_cpu`; C is `--cores`, default the detected cores):
preprocessing gets P = max(1, C // 8) instances of one thread each (tokenization costs well
under 0.1 core per 100 req/s); the online inference model gets I instances x T intra-op
threads with I x T <= C - P, so that one busy ensemble stays within the budget (below 8
cores, where P would take a whole core from inference for a twentieth of one, the
preprocessing instance shares the cores: I x T <= C). T is 1 up to 4 cores, else 2. The bulk
model gets one instance with C // 2 threads at niceness 10 (only busy during bulk jobs, and
then yielding the CPU to online instances under contention). Every other thread
pool of every process (OpenMP, MKL, OpenBLAS, Rayon, onnxruntime inter-op) is set to 1
explicitly (`tritonserver.server_environment`, the backends' config parameters) instead of
the libraries' one-thread-per-core defaults.

With `instances.rate_limit`, each inference instance also declares its threads as units of
the `cpu` resource of Triton's rate limiter, and the server (started with the budget) runs
at most C threads of inference at once across all models: the budget holds for a whole
repository of models, not only for one busy ensemble.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from generator.pipeline.spec import Batching, ModelSpec, Padding, Preprocessing, Version

TargetName = Literal["local", "ngc"]
TARGETS: tuple[TargetName, ...] = ("local", "ngc")

INFERENCE_BACKENDS: dict[TargetName, dict[str, str]] = {
    "local": {"onnx": "tritongen_onnxruntime", "torchscript": "tritongen_torchscript"},
    "ngc": {"onnx": "onnxruntime", "torchscript": "pytorch"},
}
"""Backend per target and format. `local` uses this project's Python-based backends."""


BULK_NICE = 10
"""Niceness of the bulk model's instances: under contention the kernel gives online instances
the CPU first (honoured by the local Python-based backends; Triton's native backends have no
such setting)."""


class PlanError(ValueError):
    """The specs cannot be turned into one consistent repository."""


@dataclass(frozen=True)
class TensorPlan:
    """One input or output of a Triton model (dims exclude the batch dimension)."""

    name: str
    data_type: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class CpuPlan:
    """Instance and thread counts of one model version."""

    preprocess_instances: int
    model_instances: int
    model_threads: int
    bulk_threads: int


@dataclass(frozen=True)
class PreprocessPlan:
    name: str
    version: Version
    instances: int
    max_batch_size: int
    outputs: tuple[TensorPlan, ...]


@dataclass(frozen=True)
class InferencePlan:
    name: str
    format: Literal["onnx", "torchscript"]
    backend: str
    inputs: tuple[TensorPlan, ...]
    outputs: tuple[TensorPlan, ...]
    batching: Batching
    instances: int
    threads: int
    artifact_file: str
    nice: int = 0
    """Scheduling niceness of the instance processes (the bulk model yields CPU to online)."""
    rate_limit: bool = False
    """Each instance needs `threads` units of the rate limiter's `cpu` resource."""


@dataclass(frozen=True)
class EnsemblePlan:
    name: str
    preprocess: PreprocessPlan
    inference: InferencePlan
    outputs: tuple[TensorPlan, ...]
    """Client-facing outputs (the client contract)."""
    output_map: tuple[tuple[str, str], ...]
    """(inference output name, ensemble output name) pairs."""
    description: str


@dataclass(frozen=True)
class ModelPlan:
    """Everything generated for one spec."""

    spec: ModelSpec
    preprocess: tuple[PreprocessPlan, ...]
    inference: tuple[InferencePlan, ...]
    ensembles: tuple[EnsemblePlan, ...]


@dataclass(frozen=True)
class RepositoryPlan:
    """Everything generated for all specs, for one target."""

    target: TargetName
    cores: int
    models: tuple[ModelPlan, ...] = field(default=())

    def model_names(self) -> list[str]:
        """Every Triton model name, sorted."""
        names = []
        for model in self.models:
            names += [p.name for p in model.preprocess] + [i.name for i in model.inference]
            names += [e.name for e in model.ensembles]
        return sorted(names)


TEXT_INPUT = TensorPlan("TEXT", "TYPE_STRING", (1,))
TOKEN_OUTPUTS = (
    TensorPlan("INPUT_IDS", "TYPE_INT64", (-1,)),
    TensorPlan("ATTENTION_MASK", "TYPE_INT64", (-1,)),
)


def detected_cores() -> int:
    """CPU cores this process may use (affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def plan_cpu(spec: ModelSpec, cores: int) -> CpuPlan:
    """Size instances and threads of one model from the core budget (rule in the module doc)."""
    instances = spec.instances
    preprocess = instances.preprocess if instances.preprocess != "auto" else max(1, cores // 8)
    inference_cores = max(1, cores - preprocess) if cores >= 8 else cores
    threads = instances.model_threads if instances.model_threads != "auto" else (1 if cores <= 4 else 2)
    model = instances.model if instances.model != "auto" else max(1, inference_cores // threads)
    return CpuPlan(preprocess, model, threads, bulk_threads=max(1, cores // 2))


def tensor_names(fmt: str, kind: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Input and output tensor names inside the artifact, by format and model kind."""
    if fmt == "onnx":
        outputs = ("logits", "label") if kind == "classifier" else ("embedding",)
        return ("input_ids", "attention_mask"), outputs
    # TorchScript follows the native pytorch backend's `<name>__<index>` convention.
    return ("INPUT_IDS__0", "ATTENTION_MASK__1"), ("EMBEDDING__0",)


def client_outputs(spec: ModelSpec, version: Version) -> tuple[TensorPlan, ...]:
    """The client contract: EMBEDDING [dim], or LOGITS [num_labels] and LABEL [1]."""
    if spec.kind == "embedding":
        assert version.outputs.embedding_dim is not None
        return (TensorPlan("EMBEDDING", "TYPE_FP32", (version.outputs.embedding_dim,)),)
    assert version.outputs.labels is not None
    return (
        TensorPlan("LOGITS", "TYPE_FP32", (len(version.outputs.labels),)),
        TensorPlan("LABEL", "TYPE_STRING", (1,)),
    )


def _inference_plan(
    spec: ModelSpec,
    version: Version,
    name: str,
    batching: Batching,
    instances: int,
    threads: int,
    target: TargetName,
    nice: int = 0,
) -> InferencePlan:
    fmt = version.model.format
    if spec.kind == "classifier" and fmt != "onnx":
        raise PlanError(f"{spec.name} v{version.version}: classifiers are served from onnx only")
    input_names, output_names = tensor_names(fmt, spec.kind)
    contract = client_outputs(spec, version)
    return InferencePlan(
        name=name,
        format=fmt,
        backend=INFERENCE_BACKENDS[target][fmt],
        inputs=tuple(TensorPlan(n, "TYPE_INT64", (-1,)) for n in input_names),
        outputs=tuple(TensorPlan(n, c.data_type, c.dims) for n, c in zip(output_names, contract, strict=True)),
        batching=batching,
        instances=instances,
        threads=threads,
        artifact_file="model.onnx" if fmt == "onnx" else "model.pt",
        nice=nice,
        rate_limit=spec.instances.rate_limit,
    )


def plan_model(spec: ModelSpec, target: TargetName, cores: int) -> ModelPlan:
    """Plan every Triton model of one spec."""
    cpu = plan_cpu(spec, cores)
    preprocess: list[PreprocessPlan] = []
    inference: list[InferencePlan] = []
    ensembles: list[EnsemblePlan] = []
    for version in sorted(spec.versions, key=lambda v: v.version):
        base = f"{spec.name}_v{version.version}"
        pre = PreprocessPlan(
            name=f"{base}_pre",
            version=version,
            instances=cpu.preprocess_instances,
            max_batch_size=max(spec.batching.max_batch_size, spec.bulk_batching.max_batch_size),
            outputs=TOKEN_OUTPUTS,
        )
        online = _inference_plan(
            spec, version, f"{base}_model", spec.batching, cpu.model_instances, cpu.model_threads, target
        )
        preprocess.append(pre)
        inference.append(online)
        outputs = client_outputs(spec, version)
        output_map = tuple((i.name, c.name) for i, c in zip(online.outputs, outputs, strict=True))
        ensembles.append(EnsemblePlan(base, pre, online, outputs, output_map, f"{spec.name} version {version.version}"))
        if version.version == spec.default_version:
            bulk = _inference_plan(
                spec,
                version,
                f"{base}_model_bulk",
                spec.bulk_batching,
                1,
                cpu.bulk_threads,
                target,
                nice=BULK_NICE,
            )
            inference.append(bulk)
            ensembles.append(
                EnsemblePlan(
                    spec.name,
                    pre,
                    online,
                    outputs,
                    output_map,
                    f"{spec.name} (default version {version.version}, online)",
                )
            )
            ensembles.append(
                EnsemblePlan(
                    f"{spec.name}_batch",
                    pre,
                    bulk,
                    outputs,
                    output_map,
                    f"{spec.name} (default version {version.version}, bulk)",
                )
            )
    return ModelPlan(spec, tuple(preprocess), tuple(inference), tuple(ensembles))


def plan_repository(specs: list[ModelSpec], target: TargetName, cores: int) -> RepositoryPlan:
    """Plan all specs; Triton model names must be unique across specs."""
    plan = RepositoryPlan(target, cores, tuple(plan_model(s, target, cores) for s in specs))
    owners: dict[str, str] = {}
    for model in plan.models:
        names = [p.name for p in model.preprocess] + [i.name for i in model.inference]
        for name in names + [e.name for e in model.ensembles]:
            if name in owners:
                raise PlanError(
                    f"Triton model name {name!r} is generated by both {owners[name]} and "
                    f"{model.spec.name}: rename one of the specs"
                )
            owners[name] = model.spec.name
    return plan


def preprocessing_parameters(pre: Preprocessing) -> dict[str, str]:
    """Model-config parameters read by the `tritongen_textprep` package."""
    casing = {"keep": "keep", "lowercase": "true", "cased": "false"}[pre.casing.value]
    return {
        "tokenizer_file": "tokenizer.json",
        "max_length": str(pre.max_length),
        "truncation": "true" if pre.truncation else "false",
        "lowercase": casing,
        "padding": pre.padding.value,
        "buckets": ",".join(str(b) for b in pre.buckets) if pre.padding is Padding.BUCKETS else "",
        "max_text_bytes": str(pre.max_text_bytes),
        "package_version": pre.package_version,
        "tokenizer_threads": "1",
    }
