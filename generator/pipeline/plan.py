"""Plan: validated specs -> the Triton models to generate (names, tensors, instances, threads).

Naming scheme (one Triton model per version, because `config.pbtxt` is shared by all
versions of a Triton model and each version needs its own preprocessing parameters and
execution environment):

    <name>                  ensemble, default version, online entry point (latency first)
    <name>_batch            ensemble, default version, bulk entry point (throughput first)
    <name>_v<N>             ensemble of version N (pin a version)
    <name>_v<N>_pre         preprocessing of version N (python backend, its own environment)
    <name>_v<N>_model       inference model of version N, online batching
    <name>_v<N>_model_bulk  inference model of the default version, bulk batching

Every Triton model has the single Triton version `1`.

CPU budget rule (cores C, see `plan_cpu`; C is `--cores`, default the detected cores):
preprocessing gets P = max(1, C // 8) instances of one thread each (tokenization costs well
under 0.1 core per 100 req/s); the online inference model gets I instances x T intra-op
threads with I x T <= C - P, so that one busy ensemble stays within the budget (below 8
cores, where P would take a whole core from inference for a twentieth of one, the
preprocessing instance shares the cores: I x T <= C). T is 1 up to 4 cores, else 2. The bulk
model gets one instance with C // 2 threads at niceness 10 (formats whose native backend
sets threads process-wide, TorchScript, keep the online count instead) (only busy during bulk jobs, and
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

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from generator.errors import TritongenError
from generator.kinds.formats import InferenceFormat, get_format
from generator.kinds.preprocessing import PREPROCESSORS, PreprocessingKind
from generator.kinds.targets import Target, get_target
from generator.pipeline.spec import Batching, ModelSpec, Source, Version

TRITON_VERSION_DIR = "1"
"""Every Triton model has the single version `1` (one Triton model per spec version)."""
ENVS_FOLDER = "_envs"
"""Folder, inside the model folder of the first model that uses them, holding the environments
shared by all their users (Triton ignores non-numeric folders of a model)."""
BULK_NICE = 10
"""Niceness of the bulk model's instances: under contention the kernel gives online instances
the CPU first (honoured by the local Python-based backends; Triton's native backends have no
such setting)."""
MANIFEST_FILE = "tritongen-manifest.json"
"""The plan's facts for the tools that operate a generated repository (serve, update, tune)."""

Role = Literal["online", "bulk", "pinned"]
"""An ensemble's role: `<name>` (online), `<name>_batch` (bulk) or `<name>_v<N>` (pinned)."""


class PlanError(TritongenError, ValueError):
    """The specs cannot be turned into one consistent repository."""


@dataclass(frozen=True)
class TensorPlan:
    """One input or output of a Triton model (dims exclude the batch dimension)."""

    name: str
    data_type: str
    dims: tuple[int, ...]
    ragged: bool = False
    """`allow_ragged_batch`: requests of any shape batch, concatenated into one flat tensor."""


@dataclass(frozen=True)
class BatchInputPlan:
    """A tensor the backend computes from the batch (Triton's `batch_input`)."""

    kind: str
    """`BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO`, ... (`ModelConfig.BatchInput.Kind`)."""
    target: str
    data_type: str
    source: str
    """The ragged input it counts."""


@dataclass(frozen=True)
class CpuPlan:
    """Instance and thread counts of one model version."""

    preprocess_instances: int
    model_instances: int
    model_threads: int
    bulk_threads: int


@dataclass(frozen=True)
class EnvironmentPlan:
    """The execution environment of a preprocessing model; `path` etc. are known once built."""

    name: str
    """`envs/<name>.yml`."""
    ship_stub: bool
    folder: bool
    """Shipped unpacked (a folder) instead of as the conda-pack tarball."""
    built: BuiltEnvironmentPlan | None = None


@dataclass(frozen=True)
class BuiltEnvironmentPlan:
    """Where a built environment goes in the repository and what comes with it."""

    path: str
    """Repository-relative path (`<first user>/_envs/<name>-<hash>.tar.gz`, or a folder)."""
    source: Path
    """The built tarball or unpacked folder in the build cache."""
    python: str
    """The environment's Python minor version."""
    stub: Path | None
    """Python backend stub to place in the model folder (`ship_stub`), if the server's differs."""


@dataclass(frozen=True)
class PreprocessPlan:
    name: str
    spec_name: str
    version: Version
    kind: PreprocessingKind
    instances: int
    max_batch_size: int
    inputs: tuple[TensorPlan, ...]
    outputs: tuple[TensorPlan, ...]
    parameters: dict[str, str]
    """Config parameters of the preprocessing kind (EXECUTION_ENV_PATH is added from `environment`)."""
    files: dict[str, Source]
    """Version-folder artifacts: file name -> spec source."""
    environment: EnvironmentPlan | None

    @property
    def environment_parameter(self) -> str | None:
        """EXECUTION_ENV_PATH, relative to the model folder as Triton substitutes it."""
        if self.environment is None:
            return None
        if self.environment.built is None:
            raise PlanError(f"{self.name}: environment {self.environment.name} is not built yet")
        return f"$$TRITON_MODEL_DIRECTORY/../{self.environment.built.path}"


@dataclass(frozen=True)
class InferencePlan:
    name: str
    spec_name: str
    version: Version
    format: InferenceFormat
    inputs: tuple[TensorPlan, ...]
    outputs: tuple[TensorPlan, ...]
    batching: Batching
    instances: int
    threads: int
    nice: int = 0
    """Scheduling niceness of the instance processes (the bulk model yields CPU to online)."""
    rate_limit: bool = False
    """Each instance needs `threads` units of the rate limiter's `cpu` resource."""
    batch_inputs: tuple[BatchInputPlan, ...] = ()

    @property
    def backend(self) -> str:
        return self.format.backend

    @property
    def artifact_file(self) -> str:
        return self.format.filename

    @property
    def parameters(self) -> dict[str, str]:
        values = self.format.parameters(self.threads)
        if self.nice:
            values["process_nice"] = str(self.nice)
        return values


@dataclass(frozen=True)
class EnsemblePlan:
    name: str
    role: Role
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

    target: Target
    cores: int
    """The CPU budget every model was sized for."""
    models: tuple[ModelPlan, ...] = field(default=())

    @property
    def rate_limit_cores(self) -> int | None:
        """Cores of the rate limiter's `cpu` resource the server needs; None: no model uses it."""
        uses = any(i.rate_limit for model in self.models for i in model.inference)
        return self.cores if uses else None

    def preprocess_models(self) -> list[PreprocessPlan]:
        return [p for model in self.models for p in model.preprocess]

    def inference_models(self) -> list[InferencePlan]:
        return [i for model in self.models for i in model.inference]

    def ensembles(self) -> list[EnsemblePlan]:
        return [e for model in self.models for e in model.ensembles]

    def model_names(self) -> list[str]:
        """Every Triton model name, sorted."""
        names = [p.name for p in self.preprocess_models()] + [i.name for i in self.inference_models()]
        return sorted(names + [e.name for e in self.ensembles()])

    def with_environments(self, built: dict[str, BuiltEnvironmentPlan]) -> RepositoryPlan:
        """The plan with every preprocessing environment resolved (`built`: pre model -> facts)."""

        def resolve(pre: PreprocessPlan) -> PreprocessPlan:
            if pre.environment is None:
                return pre
            return replace(pre, environment=replace(pre.environment, built=built[pre.name]))

        models = []
        for model in self.models:
            pres = {p.name: resolve(p) for p in model.preprocess}
            ensembles = tuple(replace(e, preprocess=pres[e.preprocess.name]) for e in model.ensembles)
            models.append(replace(model, preprocess=tuple(pres.values()), ensembles=ensembles))
        return replace(self, models=tuple(models))

    def manifest(self) -> dict[str, Any]:
        """The plan's facts for serve, update, tune and soak (MANIFEST_FILE; the same for every target)."""
        models: dict[str, dict[str, Any]] = {}
        for pre in self.preprocess_models():
            environment = pre.environment.built.path if pre.environment and pre.environment.built else None
            models[pre.name] = {
                "role": "preprocess",
                "spec": pre.spec_name,
                "version": pre.version.version,
                "backend": pre.kind.backend,
                "instances": pre.instances,
                "environment": environment,
                "depends_on": [],
            }
        for inference in self.inference_models():
            models[inference.name] = {
                "role": "inference",
                "spec": inference.spec_name,
                "version": inference.version.version,
                "backend": inference.backend,
                "format": inference.format.name,
                "instances": inference.instances,
                "threads": inference.threads,
                "depends_on": [],
            }
        for ensemble in self.ensembles():
            models[ensemble.name] = {
                "role": ensemble.role,
                "spec": ensemble.preprocess.spec_name,
                "version": ensemble.preprocess.version.version,
                "backend": "ensemble",
                "depends_on": [ensemble.preprocess.name, ensemble.inference.name],
                "max_batch_size": ensemble.inference.batching.max_batch_size,
                "inputs": [tensor.name for tensor in ensemble.preprocess.inputs],
                "outputs": [tensor.name for tensor in ensemble.outputs],
            }
        return {
            "generator": "tritongen",
            "cpu_budget": self.cores,
            "rate_limit_cores": self.rate_limit_cores,
            "models": dict(sorted(models.items())),
        }

    def manifest_text(self) -> str:
        return json.dumps(self.manifest(), indent=2, sort_keys=True) + "\n"


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
    spec: ModelSpec, version: Version, name: str, batching: Batching, instances: int, threads: int, nice: int = 0
) -> InferencePlan:
    kind = get_format(version.model.format)
    if spec.kind == "classifier" and not kind.classifiers:
        raise PlanError(f"{spec.name} v{version.version}: classifiers cannot be served from {kind.name}")
    output_names = kind.tensor_names(spec.kind)[1]
    contract = client_outputs(spec, version)
    return InferencePlan(
        name=name,
        spec_name=spec.name,
        version=version,
        format=kind,
        inputs=kind.inputs(spec.kind),
        batch_inputs=kind.batch_inputs(),
        outputs=tuple(TensorPlan(n, c.data_type, c.dims) for n, c in zip(output_names, contract, strict=True)),
        batching=batching,
        instances=instances,
        threads=threads,
        nice=nice,
        rate_limit=spec.instances.rate_limit,
    )


def _preprocess_plan(spec: ModelSpec, version: Version, name: str, instances: int) -> PreprocessPlan:
    settings = version.preprocessing
    kind = PREPROCESSORS[settings.kind]
    environment = (
        EnvironmentPlan(settings.environment, settings.ship_stub, settings.environment_format == "folder")
        if settings.environment
        else None
    )
    return PreprocessPlan(
        name=name,
        spec_name=spec.name,
        version=version,
        kind=kind,
        instances=instances,
        max_batch_size=max(spec.batching.max_batch_size, spec.bulk_batching.max_batch_size),
        inputs=kind.inputs(),
        outputs=kind.outputs(settings),
        parameters=kind.parameters(settings),
        files=dict(kind.version_files(settings)),  # type: ignore[arg-type]
        environment=environment,
    )


def plan_model(spec: ModelSpec, cores: int) -> ModelPlan:
    """Plan every Triton model of one spec."""
    cpu = plan_cpu(spec, cores)
    preprocess: list[PreprocessPlan] = []
    inference: list[InferencePlan] = []
    ensembles: list[EnsemblePlan] = []
    for version in sorted(spec.versions, key=lambda v: v.version):
        base = f"{spec.name}_v{version.version}"
        pre = _preprocess_plan(spec, version, f"{base}_pre", cpu.preprocess_instances)
        online = _inference_plan(spec, version, f"{base}_model", spec.batching, cpu.model_instances, cpu.model_threads)
        preprocess.append(pre)
        inference.append(online)
        outputs = client_outputs(spec, version)
        output_map = tuple((i.name, c.name) for i, c in zip(online.outputs, outputs, strict=True))
        ensembles.append(
            EnsemblePlan(base, "pinned", pre, online, outputs, output_map, f"{spec.name} version {version.version}")
        )
        if version.version == spec.default_version:
            # Process-wide thread settings (TorchScript): the bulk model must not change them.
            bulk_threads = cpu.model_threads if online.format.process_wide_threads else cpu.bulk_threads
            bulk = _inference_plan(
                spec, version, f"{base}_model_bulk", spec.bulk_batching, 1, bulk_threads, nice=BULK_NICE
            )
            inference.append(bulk)
            ensembles.append(
                EnsemblePlan(
                    spec.name,
                    "online",
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
                    "bulk",
                    pre,
                    bulk,
                    outputs,
                    output_map,
                    f"{spec.name} (default version {version.version}, bulk)",
                )
            )
    return ModelPlan(spec, tuple(preprocess), tuple(inference), tuple(ensembles))


def plan_repository(specs: list[ModelSpec], target: str | Target, cores: int) -> RepositoryPlan:
    """Plan all specs; Triton model names must be unique across specs."""
    resolved = target if isinstance(target, Target) else get_target(target)
    plan = RepositoryPlan(resolved, cores, tuple(plan_model(s, cores) for s in specs))
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
    _check_process_wide_threads(plan)
    return plan


def _check_process_wide_threads(plan: RepositoryPlan) -> None:
    """Formats with process-wide thread settings need one thread count per repository."""
    counts: dict[str, dict[int, list[str]]] = {}
    for inference in plan.inference_models():
        if inference.format.process_wide_threads:
            counts.setdefault(inference.format.name, {}).setdefault(inference.threads, []).append(inference.name)
    for name, by_threads in counts.items():
        if len(by_threads) > 1:
            detail = "; ".join(
                f"{threads} threads: {', '.join(models)}" for threads, models in sorted(by_threads.items())
            )
            raise PlanError(
                f"{name} models set intra-op threads process-wide on Triton's native backend (the last "
                f"loaded model wins), but these differ ({detail}): give them the same instances.model_threads"
            )
