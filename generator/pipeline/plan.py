"""Plan: validated specs -> the Triton models to generate (names, tensors, instances, threads).

Naming scheme (one Triton model per version, because `config.pbtxt` is shared by all
versions of a Triton model and each version needs its own preprocessing parameters and
execution environment):

    <name>                  ensemble, default version, online entry point (latency first)
    <name>_batch            ensemble, default version, bulk entry point (throughput first)
    <name>_v<N>             ensemble of version N (pin a version)
    <name>_rerank           rerankers: ensemble of the default version taking one query and
                            n texts (its own preprocessing, no batching, pairs the query with
                            each text); the inference model's dynamic batcher batches the pairs
    <kind>_<12 hex>         preprocessing, named by content and shared (see below)
    <name>_v<N>_model       inference model of version N, used by all three ensembles

Every Triton model has the single Triton version `1`.

Preprocessing is shared by content: every version's preprocessing model is named
`<kind>_<first 12 hex digits of a sha256>` (e.g. `textprep_3f9a0c1b2d4e`) over the canonical
JSON of what decides its behaviour (`preprocess_identity`): the preprocessing kind, the
package version, the kind's config parameters (`TokenizerSettings.to_parameters`: max_length,
truncation, casing, padding, buckets, max_text_bytes, ...), its output tensors, the sha256 of
every version-folder file (the tokenizer file's bytes, not its path), of the generated
`model.py`, and the environment (name, sha256 of `envs/<name>.yml`, ship_stub). Versions of
any specs with the same identity get ONE Triton model, used by every ensemble that needs it;
a changed tokenizer or parameter is another name, so an ensemble's preprocessing can never
change under it (version alignment by construction). The solved
environment's content hash is known only after the solve: it is in the model's
EXECUTION_ENV_PATH (a re-solve changes the config of every user at once, not the name).
Capacity and packaging are not identity: the shared model's `max_batch_size` and instance
count are the maximum over its users, and its environment ships unpacked (`environment_format:
folder`) if any user asks for that (`RepositoryPlan.manifest` lists the users: spec and version).

The repository budget (`repository_settings.Budget`: cores C and memory M of the pod, from
`models/repository.yaml`, `--cores`, the existing manifest or the machine) sizes every model.
Nothing depends on how many specs there are: adding or removing one changes no server-level
setting (those need a restart), and other models' layouts only through the rule below.

- Server: Triton's rate limiter is always on, with C units of a `cpu` resource
  (`--rate-limit=execution_count --rate-limit-resource=cpu:C`); `--model-load-thread-count`
  max(4, 2C); the backend configs below. All from C alone.
- Threads: each inference instance runs T intra-op threads (T = 1 up to 4 cores, else 2;
  `instances.model_threads`) and declares them as T `cpu` units, so that at most C threads of
  inference run at once across all models and the rest queue in Triton instead of being
  time-sliced by the OS. An instance needing more units than C could never run: a spec error.
  Every other thread pool of every process (OpenMP, MKL, OpenBLAS, Rayon, onnxruntime inter-op)
  is set to 1 explicitly (`serving.process.server_environment`, the backends' parameters).
- Preprocessing: P = max(1, C // 8) instances of one thread each (tokenization costs well under
  0.1 core per 100 req/s), outside the limiter.
- Instances: the full layout is I_full = (C - P) // T from 8 cores on, C // T below (where P
  would take a whole core from inference for a twentieth of one), at least 1: one model alone
  can use every inference core. A spec of traffic weight w (`traffic_weight`, default 1) wants
  ceil(I_full x w / w_max) instances, w_max the largest weight of the repository: the hottest
  model can use every core, one of half its weight half of them, every model at least one.
- Memory: every model version starts with one instance; extra instances, up to what each
  wants, are then given one at a time to the model version with the highest weight per
  instance (ties by name) while the pod's memory (`pod_memory_mib`: MEMORY_HEADROOM x the
  expected memory) stays within M on every target (so that both targets get the same files;
  a target that cannot hold one instance per model version does not count: generating for it
  fails). A spec whose model alone does not fit, or a repository that does not fit with one
  instance per model version, is a spec error: nothing is written.

Expected memory on a target (`RepositoryPlan.expected_memory_mib`): tritonserver
(`Target.server_memory`), plus per instance the measured footprint of its kind: preprocessing
(`PreprocessingKind.memory`) and inference (`InferenceFormat.memory`, per format and
`model.quantize` precision, the `local` stand-ins' or NVIDIA's native backends' figures), plus
STUB_SHM_MIB per stub process. The Kubernetes pod requests the same figure.

With equal weights and memory to spare, every model gets the layout every few-model benchmark
measured (instances x threads = the inference cores), now under the limiter, which changes
nothing while one model is busy and bounds the cores when several are (20 models: +6 %
throughput, the hot model's queue 266 -> 22 ms). Explicit `instances` counts are kept;
`instances.rate_limit: false` takes a model out of the limiter.

One copy of the weights per model version: the bulk entry point `<name>_batch` runs the same
inference model as `<name>` (and the same preprocessing). The inference model has Triton's
priority queues (`dynamic_batching { priority_levels: 2 default_priority_level: 1 }`): a
request without a priority is online (level 1), bulk clients send `priority: 2`
(BULK_PRIORITY) and their requests wait while online ones are queued. The preprocessing model
keeps one FIFO queue (tokenizing is short; with priority levels its python-backend batcher
stalled requests for up to 0.5 s at low concurrency, `render.preprocess_config`). Priority is
a request field: Triton's ensemble scheduler copies the ensemble request's priority to every
step's request (an ensemble accepts any level and its steps have no priority setting), so the
bulk ensemble cannot set it itself; the manifest records each entry point's level for its clients. A batch already
running is not preempted: an online request can still wait for one bulk batch.

Every target bounds the cores the same way: per-model thread parameters (each ONNX Runtime
session its own intra-op pool) plus the rate limiter. ONNX Runtime's process-wide pool
(`--backend-config=onnxruntime,enable-global-threadpool=1`) is not emitted: on NVIDIA's
native backend it starved the padded ensemble (46-153 vs 315-326 req/s at concurrency 32 on 2
cores, docs/ngc-standin.md), and the Python-based stand-ins cannot show that.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from generator.base.launch import ServerSettings
from generator.base.sources import ArtifactError, file_sha256, resolve_source, source_digest
from generator.base.tensors import BatchInputPlan, TensorPlan
from generator.environments.envspec import ENVS_DIR
from generator.errors import TritongenError
from generator.kinds.formats import InferenceFormat, get_format
from generator.kinds.preprocessing import PREPROCESSORS, PreprocessingKind
from generator.kinds.preprocessing.base import Layout
from generator.kinds.targets import TARGETS, Target, get_target
from generator.pipeline.manifest import SCHEMA_VERSION, Manifest, ManifestBatching, ManifestModel, ManifestUser
from generator.pipeline.repository_settings import DEFAULT_MEMORY_MIB, MEMORY_HEADROOM, Budget
from generator.pipeline.repository_settings import detected_cores as detected_cores
from generator.pipeline.spec import Batching, ModelSpec, Preprocessing, Source, SpecError, Version, version_sources

TRITON_VERSION_DIR = "1"
"""Every Triton model has the single version `1` (one Triton model per spec version)."""
ENVS_FOLDER = "_envs"
"""Folder, inside the model folder of the first model that uses them, holding the environments
shared by all their users (Triton ignores non-numeric folders of a model)."""
PRIORITY_LEVELS = 2
"""Priority levels of every model's dynamic batcher (`dynamic_batching.priority_levels`)."""
ONLINE_PRIORITY = 1
"""The default level (`default_priority_level`): requests that send no priority (online)."""
BULK_PRIORITY = 2
"""The level clients of `<name>_batch` send (`priority` of the request): served after online."""
STUB_SHM_MIB = 1.0
"""/dev/shm of each python-backend stub process (the backend's default 1 MiB region; 19 MiB
measured for the shipped repository's 19 stubs in the Kubernetes pod)."""
PYTHON_BACKEND_CONFIG = "python,thread-pool-size=1"
"""The python backend starts a pool of `thread-pool-size` threads (default 32) in the server for
EVERY instance, used only for BLS calls and decoupled responses (r24.10 `python_be.cc`); the
generated preprocessing models and the local runners use neither: one thread each, not 32.
The same on NVIDIA's image (its python backend serves the preprocessing models)."""
PREPROCESS_CODE_FILE = "model.py"
"""The generated python-backend code of a preprocessing model, in its version folder."""
PREPROCESS_HASH_LENGTH = 12
"""Hex digits of the identity hash in a preprocessing model's name (`<kind>_<12 hex>`)."""
"""`envs/<name>.yml`: the environment specs (their bytes are part of a preprocessing identity)."""

Role = Literal["online", "bulk", "pinned", "rerank"]
"""An ensemble's role: `<name>` (online), `<name>_batch` (bulk), `<name>_v<N>` (pinned) or a
reranker's `<name>_rerank`."""


class PlanError(TritongenError, ValueError):
    """The specs cannot be turned into one consistent repository."""


@dataclass(frozen=True)
class CpuPlan:
    """Instance and thread counts of one model version."""

    preprocess_instances: int
    model_instances: int
    model_threads: int
    rate_limit: bool = True
    """Inference instances declare their threads to Triton's rate limiter."""


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
class PreprocessUser:
    """A spec version whose ensembles run a (shared) preprocessing model."""

    spec_name: str
    version: int


@dataclass(frozen=True)
class PreprocessPlan:
    """One preprocessing model, named by content and shared by every version it fits."""

    name: str
    """`<kind>_<12 hex>` over `preprocess_identity` (module doc)."""
    users: tuple[PreprocessUser, ...]
    """Every spec version that uses it, sorted."""
    settings: Preprocessing
    """The preprocessing settings (of the first user; every user's have the same identity)."""
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
    def spec_name(self) -> str:
        """The first user's spec (messages; `users` has them all)."""
        return self.users[0].spec_name

    def describe_users(self) -> str:
        """`a v1, b v2`: the spec versions using the model (messages)."""
        return ", ".join(f"{user.spec_name} v{user.version}" for user in self.users)

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
    rate_limit: bool = True
    """Each instance needs `threads` units of the rate limiter's `cpu` resource."""
    batch_inputs: tuple[BatchInputPlan, ...] = ()
    sources: dict[str, str] = field(default_factory=dict)
    """The content digest (`source_digest`) of every source of the version (its model's and its
    preprocessing's), by field path inside the version: changed weights change the manifest."""

    @property
    def quantize(self) -> str | None:
        """The version's `model.quantize` method (None: full precision)."""
        return self.version.model.quantize.method if self.version.model.quantize else None

    @property
    def cpu_units(self) -> int | None:
        """Units of the rate limiter's `cpu` resource each instance takes (None: not limited)."""
        return self.threads if self.rate_limit else None

    def instance_memory_mib(self, target: Target) -> float:
        """One instance on `target`: its format's footprint at its precision, plus its stub's
        /dev/shm region on the stand-ins (NVIDIA's native backends run it inside tritonserver)."""
        footprint = self.format.memory(target.native_inference, self.quantize).mib
        return footprint + (0.0 if target.native_inference else STUB_SHM_MIB)

    @property
    def backend(self) -> str:
        return self.format.backend

    @property
    def artifact_file(self) -> str:
        return self.format.filename

    @property
    def parameters(self) -> dict[str, str]:
        return self.format.parameters(self.threads)


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
    max_batch_size: int
    """The largest request the entry point accepts (bulk: `bulk_batching.max_batch_size`)."""

    @property
    def priority(self) -> int:
        """The request priority the entry point's clients send (BULK_PRIORITY for `bulk`)."""
        return BULK_PRIORITY if self.role == "bulk" else ONLINE_PRIORITY


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
    memory_budget_mib: int = DEFAULT_MEMORY_MIB
    """The pod memory the repository was sized for (`repository.yaml`'s `memory_mib`)."""

    @property
    def rate_limit_cores(self) -> int:
        """Units of the rate limiter's `cpu` resource the server is started with: the cores,
        whatever the specs (the server's settings never depend on them; module doc)."""
        return self.cores

    def expected_memory_mib(self, target: Target | None = None) -> float:
        """The repository's expected memory on `target` (default: the plan's), from the measured
        footprints: tritonserver, each preprocessing and inference instance, stub /dev/shm."""
        target = target or self.target
        pre = sum(p.instances * (p.kind.memory.mib + STUB_SHM_MIB) for p in self.preprocess_models())
        inference = sum(i.instances * i.instance_memory_mib(target) for i in self.inference_models())
        return target.server_memory.mib + pre + inference

    def pod_memory_mib(self, target: Target | None = None) -> int:
        """The pod's memory for the repository on `target` (`pod_memory_mib` of its expected memory)."""
        return pod_memory_mib(self.expected_memory_mib(target))

    def describe_memory(self, target: Target | None = None) -> str:
        """`expected memory 2,130 MiB on target local (server 50, 4 preprocessing instances 176, ...); pod
        3,200 MiB with 1.5x headroom, of the 16,384 MiB budget` (what `generate` says)."""
        target = target or self.target
        pre = self.preprocess_models()
        inference = self.inference_models()
        pre_count = sum(p.instances for p in pre)
        pre_mib = sum(p.instances * (p.kind.memory.mib + STUB_SHM_MIB) for p in pre)
        inference_count = sum(i.instances for i in inference)
        inference_mib = sum(i.instances * i.instance_memory_mib(target) for i in inference)
        return (
            f"expected memory {self.expected_memory_mib(target):,.0f} MiB on target {target.name} (server "
            f"{target.server_memory.mib:,.0f}, {pre_count} preprocessing instances {pre_mib:,.0f}, "
            f"{inference_count} inference instances {inference_mib:,.0f}); pod {self.pod_memory_mib(target):,} MiB "
            f"with {MEMORY_HEADROOM:g}x headroom, of the {self.memory_budget_mib:,} MiB budget"
        )

    @property
    def model_load_threads(self) -> int:
        """tritonserver's `--model-load-thread-count`: models loading in parallel (Triton's
        default 4). A load waits on I/O and a stub's start as much as on a core: two per core."""
        return max(4, 2 * self.cores)

    @property
    def backend_configs(self) -> tuple[str, ...]:
        """tritonserver `--backend-config` values (`backend,setting=value`), the same on every
        target: PYTHON_BACKEND_CONFIG. No shared ONNX Runtime pool (see the module docstring)."""
        return (PYTHON_BACKEND_CONFIG,)

    def server_settings(self) -> ServerSettings:
        """What the server running this repository is started with (launchers, manifests)."""
        return ServerSettings(self.rate_limit_cores, self.model_load_threads, self.backend_configs)

    def preprocess_models(self) -> list[PreprocessPlan]:
        """Every preprocessing model once (shared ones are in several specs' plans), by name."""
        unique = {p.name: p for model in self.models for p in model.preprocess}
        return [unique[name] for name in sorted(unique)]

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

        resolved = {pre.name: resolve(pre) for pre in self.preprocess_models()}
        return replace(self, models=_with_preprocess(self.models, resolved))

    def manifest(self) -> Manifest:
        """The plan's facts for the tools that operate the repository (MANIFEST_FILE)."""
        models: list[ManifestModel] = []
        for pre in self.preprocess_models():
            models.append(
                ManifestModel(
                    name=pre.name,
                    role="preprocess",
                    spec=pre.spec_name,
                    version=pre.users[0].version,
                    backend=pre.kind.backend,
                    files=tuple(sorted({PREPROCESS_CODE_FILE, *pre.files})),
                    batching=ManifestBatching(max_batch_size=pre.max_batch_size, max_queue_delay_us=0),
                    instances=pre.instances,
                    environment=pre.environment.built.path if pre.environment and pre.environment.built else None,
                    inputs=tuple(tensor.name for tensor in pre.inputs),
                    outputs=tuple(tensor.name for tensor in pre.outputs),
                    users=tuple(ManifestUser(spec=user.spec_name, version=user.version) for user in pre.users),
                )
            )
        for inference in self.inference_models():
            batching = inference.batching
            models.append(
                ManifestModel(
                    name=inference.name,
                    role="inference",
                    spec=inference.spec_name,
                    version=inference.version.version,
                    backend=inference.backend,
                    format=inference.format.name,
                    files=(inference.artifact_file,),
                    batching=ManifestBatching(
                        max_batch_size=batching.max_batch_size,
                        preferred_batch_sizes=tuple(batching.preferred_batch_sizes),
                        max_queue_delay_us=batching.max_queue_delay_us,
                    ),
                    instances=inference.instances,
                    threads=inference.threads,
                    cpu_units=inference.cpu_units,
                    inputs=tuple(tensor.name for tensor in inference.inputs),
                    outputs=tuple(tensor.name for tensor in inference.outputs),
                    sources=inference.sources,
                )
            )
        for ensemble in self.ensembles():
            models.append(
                ManifestModel(
                    name=ensemble.name,
                    role=ensemble.role,
                    spec=ensemble.inference.spec_name,
                    version=ensemble.inference.version.version,
                    backend="ensemble",
                    batching=ManifestBatching(max_batch_size=ensemble.max_batch_size),
                    depends_on=(ensemble.preprocess.name, ensemble.inference.name),
                    inputs=tuple(tensor.name for tensor in ensemble.preprocess.inputs),
                    outputs=tuple(tensor.name for tensor in ensemble.outputs),
                    priority=ensemble.priority,
                )
            )
        return Manifest(
            schema_version=SCHEMA_VERSION,
            target=self.target.name,
            image=self.target.image,
            cpu_budget=self.cores,
            rate_limit_cores=self.rate_limit_cores,
            model_load_threads=self.model_load_threads,
            backend_configs=self.backend_configs,
            memory_budget_mib=self.memory_budget_mib,
            models={model.name: model for model in sorted(models, key=lambda model: model.name)},
        )


def pod_memory_mib(expected_mib: float) -> int:
    """The pod memory for an expected footprint: MEMORY_HEADROOM x, rounded up to 64 MiB."""
    return math.ceil(expected_mib * MEMORY_HEADROOM / 64) * 64


def inference_cores(cores: int, preprocess: int | None = None) -> int:
    """Cores of the budget left to inference: C - P from 8 cores on, else all C (module doc)."""
    preprocess = max(1, cores // 8) if preprocess is None else preprocess
    return max(1, cores - preprocess) if cores >= 8 else cores


def plan_cpu(spec: ModelSpec, cores: int, instances: int | None = None) -> CpuPlan:
    """Instances and threads of one model version from the core budget (rule in the module doc);
    `instances`: what the repository's memory and weights give an `auto` model (None: the full
    layout of a model alone, every inference core)."""
    asked = spec.instances
    preprocess = asked.preprocess if asked.preprocess != "auto" else max(1, cores // 8)
    threads = asked.model_threads if asked.model_threads != "auto" else (1 if cores <= 4 else 2)
    if asked.model != "auto":
        model = asked.model
    else:
        model = max(1, inference_cores(cores, preprocess) // threads) if instances is None else instances
    return CpuPlan(preprocess, model, threads, asked.rate_limit is not False)


def client_outputs(spec: ModelSpec, version: Version) -> tuple[TensorPlan, ...]:
    """The client contract: EMBEDDING [dim]; or LOGITS and PROBABILITIES [num_labels], then
    LABEL [1] (classifier) or LABELS [num_labels] (multi_label_classifier); or SCORE [1] (reranker)."""
    if spec.kind == "reranker":
        return (TensorPlan("SCORE", "TYPE_FP32", (1,)),)
    if spec.kind == "embedding":
        assert version.outputs.embedding_dim is not None
        return (TensorPlan("EMBEDDING", "TYPE_FP32", (version.outputs.embedding_dim,)),)
    assert version.outputs.labels is not None
    count = len(version.outputs.labels)
    if spec.kind == "multi_label_classifier":
        strings = TensorPlan("LABELS", "TYPE_STRING", (count,))
    else:
        strings = TensorPlan("LABEL", "TYPE_STRING", (1,))
    return (
        TensorPlan("LOGITS", "TYPE_FP32", (count,)),
        TensorPlan("PROBABILITIES", "TYPE_FP32", (count,)),
        strings,
    )


def _inference_plan(spec: ModelSpec, version: Version, name: str, batching: Batching, cpu: CpuPlan) -> InferencePlan:
    inference_format = get_format(version.model.format)
    if spec.kind in ("classifier", "multi_label_classifier") and not inference_format.classifiers:
        raise PlanError(f"{spec.name} v{version.version}: classifiers cannot be served from {inference_format.name}")
    output_names = inference_format.tensor_names(spec.kind)[1]
    contract = client_outputs(spec, version)
    return InferencePlan(
        name=name,
        spec_name=spec.name,
        version=version,
        format=inference_format,
        inputs=inference_format.inputs(spec.kind),
        batch_inputs=inference_format.batch_inputs(),
        outputs=tuple(TensorPlan(n, c.data_type, c.dims) for n, c in zip(output_names, contract, strict=True)),
        batching=batching,
        instances=cpu.model_instances,
        threads=cpu.model_threads,
        rate_limit=cpu.rate_limit,
        sources=source_digests(spec, version),
    )


def source_digests(spec: ModelSpec, version: Version) -> dict[str, str]:
    """`source_digest` of every source of a version, by field path inside the version."""
    digests = {}
    for path, source in version_sources(version).items():
        try:
            digests[path] = source_digest(source)
        except ArtifactError as error:
            raise PlanError(f"{spec.name} v{version.version}: {path}: {error}") from None
    return digests


def preprocess_identity(settings: Preprocessing, layout: Layout = "text", max_texts: int = 0) -> dict[str, Any]:
    """What decides a preprocessing model's behaviour and files (named by its hash; module doc);
    `layout` and `max_texts` (a `rerank` request's most texts) are in its parameters and inputs."""
    kind = PREPROCESSORS[settings.kind]
    files: dict[str, str] = {}
    for filename, source in sorted(kind.version_files(settings).items()):
        try:
            files[filename] = file_sha256(resolve_source(source))  # read once per process
        except (ArtifactError, OSError) as error:
            raise PlanError(f"preprocessing file {filename}: {error}") from None
    environment: dict[str, Any] | None = None
    if settings.environment:
        spec_file = ENVS_DIR / f"{settings.environment}.yml"
        environment = {  # not its format: tarball or folder ship the same environment
            "name": settings.environment,
            "spec_sha256": file_sha256(spec_file) if spec_file.is_file() else None,
            "ship_stub": settings.ship_stub,
        }
    identity = {
        "kind": kind.name,
        "package_version": settings.package_version,
        "parameters": kind.parameters(settings, layout, max_texts),
        "outputs": [[t.name, t.data_type, list(t.dims)] for t in kind.outputs(settings, layout)],
        "files": files,
        "model_code_sha256": hashlib.sha256(kind.model_code().encode()).hexdigest(),
        "environment": environment,
    }
    if layout != "text":  # added with pairs: the identities of text models stay as they were
        identity["inputs"] = [[t.name, t.data_type, list(t.dims)] for t in kind.inputs(layout)]
    return identity


def preprocess_name(settings: Preprocessing, layout: Layout = "text", max_texts: int = 0) -> str:
    """`<kind>_<12 hex>`: the content name of a version's preprocessing model (deterministic)."""
    identity = preprocess_identity(settings, layout, max_texts)
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return f"{settings.kind}_{hashlib.sha256(canonical.encode()).hexdigest()[:PREPROCESS_HASH_LENGTH]}"


def _preprocess_plan(
    spec: ModelSpec, version: Version, instances: int, layout: Layout = "text", max_texts: int = 0
) -> PreprocessPlan:
    """A version's preprocessing for `layout` requests (`rerank`: no batching, `max_texts` per request)."""
    settings = version.preprocessing
    kind = PREPROCESSORS[settings.kind]
    largest_bulk = spec.bulk_batching.max_batch_size
    environment = (
        EnvironmentPlan(settings.environment, settings.ship_stub, settings.environment_format == "folder")
        if settings.environment
        else None
    )
    return PreprocessPlan(
        name=preprocess_name(settings, layout, max_texts),
        users=(PreprocessUser(spec.name, version.version),),
        settings=settings,
        kind=kind,
        instances=instances,
        max_batch_size=0 if layout == "rerank" else max(spec.batching.max_batch_size, largest_bulk),
        inputs=kind.inputs(layout),
        outputs=kind.outputs(settings, layout),
        parameters=kind.parameters(settings, layout, max_texts),
        files=dict(kind.version_files(settings)),  # type: ignore[arg-type]
        environment=environment,
    )


def plan_model(spec: ModelSpec, cores: int, instances: Mapping[int, int] | None = None) -> ModelPlan:
    """Plan every Triton model of one spec (preprocessing per version: `plan_repository` shares
    it); `instances`: version -> inference instances of an `auto` model (None: the full layout)."""
    preprocess: list[PreprocessPlan] = []
    inference: list[InferencePlan] = []
    ensembles: list[EnsemblePlan] = []
    for version in sorted(spec.versions, key=lambda v: v.version):
        cpu = plan_cpu(spec, cores, None if instances is None else instances[version.version])
        base = f"{spec.name}_v{version.version}"
        pairs = spec.kind == "reranker"
        pre = _preprocess_plan(spec, version, cpu.preprocess_instances, "pairs" if pairs else "text")
        default = version.version == spec.default_version
        # The default version's model also runs `<name>_batch` (at BULK_PRIORITY): it takes the
        # bulk entry point's largest request too (preferred sizes and delay stay online's). So
        # does every version's, so that switching `default_version` changes no inference model.
        largest = max(spec.batching.max_batch_size, spec.bulk_batching.max_batch_size)
        batching = spec.batching.model_copy(update={"max_batch_size": largest})
        online = _inference_plan(spec, version, f"{base}_model", batching, cpu)
        preprocess.append(pre)
        inference.append(online)
        outputs = client_outputs(spec, version)
        output_map = tuple((i.name, c.name) for i, c in zip(online.outputs, outputs, strict=True))
        ensembles.append(
            EnsemblePlan(
                base,
                "pinned",
                pre,
                online,
                outputs,
                output_map,
                f"{spec.name} version {version.version}",
                spec.batching.max_batch_size,
            )
        )
        if default:
            ensembles.append(
                EnsemblePlan(
                    spec.name,
                    "online",
                    pre,
                    online,
                    outputs,
                    output_map,
                    f"{spec.name} (default version {version.version}, online)",
                    spec.batching.max_batch_size,
                )
            )
            ensembles.append(
                EnsemblePlan(
                    f"{spec.name}_batch",
                    "bulk",
                    pre,
                    online,
                    outputs,
                    output_map,
                    f"{spec.name} (default version {version.version}, bulk: send priority {BULK_PRIORITY})",
                    spec.bulk_batching.max_batch_size,
                )
            )
        if default and pairs:
            # One query and n texts per request, n up to the inference model's batch: its own
            # preprocessing without batching pairs the query with each text (module doc).
            rerank = _preprocess_plan(spec, version, cpu.preprocess_instances, "rerank", largest)
            preprocess.append(rerank)
            scores = tuple(TensorPlan("SCORES", o.data_type, (-1, *o.dims)) for o in outputs)
            ensembles.append(
                EnsemblePlan(
                    f"{spec.name}_rerank",
                    "rerank",
                    rerank,
                    online,
                    scores,
                    tuple((i.name, c.name) for i, c in zip(online.outputs, scores, strict=True)),
                    f"{spec.name} (default version {version.version}, rerank: one QUERY, up to {largest} TEXTs)",
                    0,
                )
            )
    return ModelPlan(spec, tuple(preprocess), tuple(inference), tuple(ensembles))


Instances = dict[str, dict[int, int]]
"""Spec name -> version -> inference instances."""


def plan_repository(specs: list[ModelSpec], target: str | Target, budget: Budget | int) -> RepositoryPlan:
    """Plan all specs for the repository budget (an int: that many cores and the default memory);
    Triton model names must be unique across specs. Raises SpecError when the budget cannot hold
    them (module doc) and PlanError when the specs do not fit together."""
    resolved = target if isinstance(target, Target) else get_target(target)
    budget = budget if isinstance(budget, Budget) else Budget(budget)
    _check_cores(specs, budget)
    floor = {spec.name: {version.version: 1 for version in spec.versions} for spec in specs}
    for spec in specs:
        _check_alone(spec, resolved, budget, floor[spec.name])
    smallest = _sized(specs, resolved, budget, floor)
    if smallest.pod_memory_mib() > budget.memory_mib:
        raise SpecError(
            f"{budget.settings_file}: memory_mib: the {len(specs)} specs need a {smallest.pod_memory_mib():,} MiB "
            f"pod with one instance per model version ({smallest.describe_memory()}): raise memory_mib, quantize "
            "models (model.quantize) or remove specs"
        )
    plan = _sized(specs, resolved, budget, allocate_instances(specs, budget, smallest))
    owners: dict[str, str] = {
        pre.name: "the preprocessing of " + pre.describe_users() for pre in plan.preprocess_models()
    }
    for model in plan.models:
        for name in [i.name for i in model.inference] + [e.name for e in model.ensembles]:
            if name in owners:
                raise PlanError(
                    f"Triton model name {name!r} is generated by both {owners[name]} and "
                    f"{model.spec.name}: rename one of the specs"
                )
            owners[name] = model.spec.name
    _check_process_wide_threads(plan)
    assert plan.pod_memory_mib() <= budget.memory_mib, "allocate_instances stays within the budget"
    return plan


def _sized(specs: list[ModelSpec], target: Target, budget: Budget, instances: Instances) -> RepositoryPlan:
    """The plan of `specs` with these inference instances (`auto` models) and shared preprocessing."""
    models = tuple(plan_model(spec, budget.cores, instances[spec.name]) for spec in specs)
    return RepositoryPlan(target, budget.cores, share_preprocessing(models), budget.memory_mib)


def _check_cores(specs: list[ModelSpec], budget: Budget) -> None:
    """Every inference instance must fit the rate limiter's `cpu` units (the budget's cores)."""
    if budget.cores < 1:
        raise SpecError(f"{budget.cores_from}: the CPU budget must be at least 1 core (got {budget.cores})")
    for spec in specs:
        threads = plan_cpu(spec, budget.cores).model_threads
        if threads > budget.cores:
            raise SpecError(
                f"{budget.spec_file(spec.name)}: instances.model_threads: an instance of {threads} threads needs "
                f"{threads} cores, the budget has {budget.cores} ({budget.cores_from}): lower model_threads or "
                "raise the cores"
            )


def _check_alone(spec: ModelSpec, target: Target, budget: Budget, floor: dict[int, int]) -> None:
    """A spec whose model alone (one instance per version, or its explicit count) exceeds the memory budget."""
    alone = RepositoryPlan(target, budget.cores, share_preprocessing((plan_model(spec, budget.cores, floor),)))
    alone = replace(alone, memory_budget_mib=budget.memory_mib)
    if alone.pod_memory_mib() > budget.memory_mib:
        field_name = "instances.model" if spec.instances.model != "auto" else "versions"
        raise SpecError(
            f"{budget.spec_file(spec.name)}: {field_name}: this model alone needs a {alone.pod_memory_mib():,} MiB "
            f"pod ({alone.describe_memory()}), over the memory budget ({budget.settings_file}: memory_mib): "
            "raise memory_mib or quantize the model (model.quantize)"
        )


def allocate_instances(specs: list[ModelSpec], budget: Budget, floor: RepositoryPlan) -> Instances:
    """Inference instances per spec version (module doc, "Memory"): one each (`floor`, planned so),
    then extra instances, up to ceil(full layout x weight / top weight), one at a time to the
    highest weight per instance (ties by name), while the pod fits the budget on every target
    that holds the floor (on another one, generate fails: it has no files to differ)."""
    top = max((spec.traffic_weight for spec in specs), default=1.0)
    counts: Instances = {}
    wanted: dict[tuple[str, int], int] = {}
    for spec in specs:
        counts[spec.name] = {version.version: 1 for version in spec.versions}
        full = plan_cpu(spec, budget.cores).model_instances
        for version in spec.versions:
            if spec.instances.model == "auto":
                wanted[(spec.name, version.version)] = max(1, math.ceil(full * spec.traffic_weight / top - 1e-9))
    weights = {spec.name: spec.traffic_weight for spec in specs}
    inference = {(i.spec_name, i.version.version): i for i in floor.inference_models()}
    # Every target that can hold the repository at all: generating for another one fails anyway.
    used = {name: floor.expected_memory_mib(target) for name, target in TARGETS.items()}
    targets = {name: TARGETS[name] for name, mib in used.items() if pod_memory_mib(mib) <= budget.memory_mib}
    if not targets:
        return counts
    queue = [(-weights[spec], spec, version) for (spec, version), want in wanted.items() if want > 1]
    heapq.heapify(queue)
    while queue:
        _, spec_name, version_number = heapq.heappop(queue)
        model = inference[(spec_name, version_number)]
        cost = {name: model.instance_memory_mib(target) for name, target in targets.items()}
        if any(pod_memory_mib(used[name] + cost[name]) > budget.memory_mib for name in targets):
            continue  # no room for another instance of this one; a cheaper one may fit
        for name in targets:
            used[name] += cost[name]
        count = counts[spec_name][version_number] = counts[spec_name][version_number] + 1
        if count < wanted[(spec_name, version_number)]:
            heapq.heappush(queue, (-weights[spec_name] / count, spec_name, version_number))
    return counts


def share_preprocessing(models: tuple[ModelPlan, ...]) -> tuple[ModelPlan, ...]:
    """One preprocessing model per content name for all `models`: its users are every version
    that planned it, its instances and max_batch_size the maximum over them (module doc)."""
    groups: dict[str, list[PreprocessPlan]] = {}
    for model in models:
        for pre in model.preprocess:
            groups.setdefault(pre.name, []).append(pre)
    shared: dict[str, PreprocessPlan] = {}
    for name, plans in groups.items():
        first = plans[0]
        environment = first.environment
        if environment is not None:  # unpacked if any user asks for it (faster load, same content)
            environment = replace(
                environment, folder=any(p.environment is not None and p.environment.folder for p in plans)
            )
        shared[name] = replace(
            first,
            users=tuple(sorted({user for pre in plans for user in pre.users}, key=lambda u: (u.spec_name, u.version))),
            instances=max(pre.instances for pre in plans),
            max_batch_size=max(pre.max_batch_size for pre in plans),
            environment=environment,
        )
    return _with_preprocess(models, shared)


def _with_preprocess(models: tuple[ModelPlan, ...], by_name: dict[str, PreprocessPlan]) -> tuple[ModelPlan, ...]:
    """`models` with every preprocessing plan (theirs and their ensembles') taken from `by_name`."""
    result = []
    for model in models:
        names = list(dict.fromkeys(p.name for p in model.preprocess))
        ensembles = tuple(replace(e, preprocess=by_name[e.preprocess.name]) for e in model.ensembles)
        result.append(replace(model, preprocess=tuple(by_name[n] for n in names), ensembles=ensembles))
    return tuple(result)


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
