"""Plan: validated specs -> the Triton models to generate (names, tensors, instances, threads).

Naming scheme (one Triton model per version, because `config.pbtxt` is shared by all
versions of a Triton model and each version needs its own preprocessing parameters and
execution environment):

    <name>                  ensemble, default version, online entry point (latency first)
    <name>_batch            ensemble, default version, bulk entry point (throughput first)
    <name>_v<N>             ensemble of version N (pin a version)
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

CPU budget rule (cores C, see `plan_cpu`; C is `--cores`, default the detected cores):
preprocessing gets P = max(1, C // 8) instances of one thread each (tokenization costs well
under 0.1 core per 100 req/s); the online inference model gets I instances x T intra-op
threads with I x T <= C - P, so that one busy ensemble stays within the budget (below 8
cores, where P would take a whole core from inference for a twentieth of one, the
preprocessing instance shares the cores: I x T <= C). T is 1 up to 4 cores, else 2. Every
other thread pool of every process (OpenMP, MKL, OpenBLAS, Rayon, onnxruntime inter-op) is
set to 1 explicitly (`serving.process.server_environment`, the backends' config parameters)
instead of the libraries' one-thread-per-core defaults.

One copy of the weights per model version: the bulk entry point `<name>_batch` runs the same
inference model as `<name>` (and the same preprocessing). Both have Triton's priority queues
(`dynamic_batching { priority_levels: 2 default_priority_level: 1 }`): a request without a
priority is online (level 1), bulk clients send `priority: 2` (BULK_PRIORITY) and their
requests wait while online ones are queued. Priority is a request field: Triton's ensemble
scheduler copies the ensemble request's priority to every step's request (an ensemble
accepts any level and its steps have no priority setting), so the bulk ensemble cannot set it
itself; the manifest records each entry point's level for its clients. A batch already
running is not preempted: an online request can still wait for one bulk batch.

A repository budget, not only a per-model one: with more than MANY_MODELS specs, every model
busy at once would run many times C threads. Above that threshold `auto` means
(`instances.rate_limit: auto`) Triton's rate limiter: each inference instance declares its
threads as units of the `cpu` resource, and the server (started with `cpu:C`) runs at most C
threads of inference at once across all models, queueing the rest instead of letting the OS
time-slice them (measured with 20 models: +6 % throughput, the hot model's queue 266 -> 22 ms);
and (`instances.model: auto`) ONE inference instance per model version with T threads: one
copy of the weights per version (memory first; a spec asks for more instances explicitly).
Up to MANY_MODELS specs both stay as before (limiter off, I x T per model): one busy ensemble
stays within C, a few busy at once oversubscribe at most MANY_MODELS-fold, and that is the
layout every few-model benchmark measured (the shipped repository has 4 specs); the 20-model
benchmark measured the limiter better. Between 5 and 19 specs is not measured: the threshold
turns the budget on well before the case where it is known to help.
Every target bounds the cores the same way: per-model thread parameters (each ONNX Runtime
session its own intra-op pool) plus the rate limiter. ONNX Runtime's process-wide pool
(`--backend-config=onnxruntime,enable-global-threadpool=1`) is not emitted: on NVIDIA's
native backend it starved the padded ensemble (46-153 vs 315-326 req/s at concurrency 32 on 2
cores, docs/ngc.md), and the Python-based stand-ins cannot show that.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from generator import PROJECT_ROOT
from generator.base.launch import ServerSettings
from generator.base.spec_sources import ArtifactError, resolve_source
from generator.base.tensors import BatchInputPlan, TensorPlan
from generator.errors import TritongenError
from generator.kinds.formats import InferenceFormat, get_format
from generator.kinds.preprocessing import PREPROCESSORS, PreprocessingKind
from generator.kinds.targets import Target, get_target
from generator.pipeline.manifest import SCHEMA_VERSION, Manifest, ManifestBatching, ManifestModel, ManifestUser
from generator.pipeline.spec import Batching, ModelSpec, Preprocessing, Source, Version

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
MANY_MODELS = 4
"""Above this many specs, `auto` turns on the repository budget (module doc)."""
PYTHON_BACKEND_CONFIG = "python,thread-pool-size=1"
"""The python backend starts a pool of `thread-pool-size` threads (default 32) in the server for
EVERY instance, used only for BLS calls and decoupled responses (r24.10 `python_be.cc`); the
generated preprocessing models and the local runners use neither: one thread each, not 32.
The same on NVIDIA's image (its python backend serves the preprocessing models)."""
PREPROCESS_CODE_FILE = "model.py"
"""The generated python-backend code of a preprocessing model, in its version folder."""
PREPROCESS_HASH_LENGTH = 12
"""Hex digits of the identity hash in a preprocessing model's name (`<kind>_<12 hex>`)."""
ENVS_DIR = PROJECT_ROOT / "envs"
"""`envs/<name>.yml`: the environment specs (their bytes are part of a preprocessing identity)."""

Role = Literal["online", "bulk", "pinned"]
"""An ensemble's role: `<name>` (online), `<name>_batch` (bulk) or `<name>_v<N>` (pinned)."""


class PlanError(TritongenError, ValueError):
    """The specs cannot be turned into one consistent repository."""


@dataclass(frozen=True)
class CpuPlan:
    """Instance and thread counts of one model version."""

    preprocess_instances: int
    model_instances: int
    model_threads: int
    rate_limit: bool = False
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

    @property
    def rate_limit_cores(self) -> int | None:
        """Cores of the rate limiter's `cpu` resource the server needs; None: no model uses it."""
        uses = any(i.rate_limit for model in self.models for i in model.inference)
        return self.cores if uses else None

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
                    inputs=tuple(tensor.name for tensor in inference.inputs),
                    outputs=tuple(tensor.name for tensor in inference.outputs),
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
            models={model.name: model for model in sorted(models, key=lambda model: model.name)},
        )


def detected_cores() -> int:
    """CPU cores this process may use (affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def inference_cores(cores: int, preprocess: int | None = None) -> int:
    """Cores of the budget left to inference: C - P from 8 cores on, else all C (module doc)."""
    preprocess = max(1, cores // 8) if preprocess is None else preprocess
    return max(1, cores - preprocess) if cores >= 8 else cores


def plan_cpu(spec: ModelSpec, cores: int, many: bool = False) -> CpuPlan:
    """Size instances and threads of one model from the core budget (rule in the module doc);
    `many`: the repository has more than MANY_MODELS specs (one instance, rate limited)."""
    instances = spec.instances
    preprocess = instances.preprocess if instances.preprocess != "auto" else max(1, cores // 8)
    threads = instances.model_threads if instances.model_threads != "auto" else (1 if cores <= 4 else 2)
    if instances.model != "auto":
        model = instances.model
    else:
        model = 1 if many else max(1, inference_cores(cores, preprocess) // threads)
    rate_limit = many if instances.rate_limit == "auto" else instances.rate_limit
    return CpuPlan(preprocess, model, threads, rate_limit)


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


def _inference_plan(spec: ModelSpec, version: Version, name: str, batching: Batching, cpu: CpuPlan) -> InferencePlan:
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
        instances=cpu.model_instances,
        threads=cpu.model_threads,
        rate_limit=cpu.rate_limit,
    )


_FILE_SHA256: dict[tuple[str, int, int], str] = {}
"""(path, size, mtime) -> sha256: a tokenizer file shared by many specs is read once."""


def _file_sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_SHA256:
        _FILE_SHA256[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return _FILE_SHA256[key]


def preprocess_identity(settings: Preprocessing) -> dict[str, Any]:
    """What decides a preprocessing model's behaviour and files (named by its hash; module doc)."""
    kind = PREPROCESSORS[settings.kind]
    files: dict[str, str] = {}
    for filename, source in sorted(kind.version_files(settings).items()):
        try:
            files[filename] = _file_sha256(resolve_source(source))  # type: ignore[arg-type]
        except (ArtifactError, OSError) as error:
            raise PlanError(f"preprocessing file {filename}: {error}") from None
    environment: dict[str, Any] | None = None
    if settings.environment:
        spec_file = ENVS_DIR / f"{settings.environment}.yml"
        environment = {  # not its format: tarball or folder ship the same environment
            "name": settings.environment,
            "spec_sha256": _file_sha256(spec_file) if spec_file.is_file() else None,
            "ship_stub": settings.ship_stub,
        }
    return {
        "kind": kind.name,
        "package_version": settings.package_version,
        "parameters": kind.parameters(settings),
        "outputs": [[t.name, t.data_type, list(t.dims)] for t in kind.outputs(settings)],
        "files": files,
        "model_code_sha256": hashlib.sha256(kind.model_code().encode()).hexdigest(),
        "environment": environment,
    }


def preprocess_name(settings: Preprocessing) -> str:
    """`<kind>_<12 hex>`: the content name of a version's preprocessing model (deterministic)."""
    canonical = json.dumps(preprocess_identity(settings), sort_keys=True, separators=(",", ":"))
    return f"{settings.kind}_{hashlib.sha256(canonical.encode()).hexdigest()[:PREPROCESS_HASH_LENGTH]}"


def _preprocess_plan(spec: ModelSpec, version: Version, instances: int) -> PreprocessPlan:
    settings = version.preprocessing
    kind = PREPROCESSORS[settings.kind]
    environment = (
        EnvironmentPlan(settings.environment, settings.ship_stub, settings.environment_format == "folder")
        if settings.environment
        else None
    )
    return PreprocessPlan(
        name=preprocess_name(settings),
        users=(PreprocessUser(spec.name, version.version),),
        settings=settings,
        kind=kind,
        instances=instances,
        max_batch_size=max(spec.batching.max_batch_size, spec.bulk_batching.max_batch_size),
        inputs=kind.inputs(),
        outputs=kind.outputs(settings),
        parameters=kind.parameters(settings),
        files=dict(kind.version_files(settings)),  # type: ignore[arg-type]
        environment=environment,
    )


def plan_model(spec: ModelSpec, cores: int, many: bool = False) -> ModelPlan:
    """Plan every Triton model of one spec (preprocessing per version: `plan_repository` shares it)."""
    cpu = plan_cpu(spec, cores, many)
    preprocess: list[PreprocessPlan] = []
    inference: list[InferencePlan] = []
    ensembles: list[EnsemblePlan] = []
    for version in sorted(spec.versions, key=lambda v: v.version):
        base = f"{spec.name}_v{version.version}"
        pre = _preprocess_plan(spec, version, cpu.preprocess_instances)
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
    return ModelPlan(spec, tuple(preprocess), tuple(inference), tuple(ensembles))


def plan_repository(specs: list[ModelSpec], target: str | Target, cores: int) -> RepositoryPlan:
    """Plan all specs; Triton model names must be unique across specs."""
    resolved = target if isinstance(target, Target) else get_target(target)
    many = len(specs) > MANY_MODELS
    plan = RepositoryPlan(resolved, cores, share_preprocessing(tuple(plan_model(s, cores, many) for s in specs)))
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
    return plan


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
