"""The repository manifest: the plan's facts, written by generate, read by the tools.

`tritongen serve`, `update`, `tune`, `check`, `bake`, the soak harness and the benchmarks read
these facts here instead of parsing configs, deploy files or model names. The file is part of
the generated output (deterministic JSON, drift-checked); the same model files on every target,
so only `target` and `image` differ between targets.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from generator.base.launch import ServerSettings
from generator.errors import TritongenError

MANIFEST_FILE = "tritongen-manifest.json"
"""The manifest's file name, at the repository root."""
SCHEMA_VERSION = 1
"""The manifest format this tritongen writes and reads."""
MAX_PROBLEMS_SHOWN = 5
"""Problems of an invalid manifest its error message lists (the rest are counted)."""

ManifestRole = Literal["preprocess", "inference", "online", "bulk", "pinned", "rerank"]
"""`preprocess`, `inference`, or an ensemble's role: `<name>` (online), `<name>_batch` (bulk),
`<name>_v<N>` (pinned), a reranker's `<name>_rerank` (one query, n texts)."""
ENSEMBLE_ROLES: tuple[ManifestRole, ...] = ("online", "bulk", "pinned", "rerank")
"""The roles of ensembles."""


class ManifestError(TritongenError, ValueError):
    """The repository has no readable manifest (regenerate it with `tritongen generate`)."""


class _Frozen(BaseModel):
    """Immutable, no unknown keys, no type coercion (a string is not a number)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class ManifestUser(_Frozen):
    """A spec version whose ensembles run a (shared) preprocessing model."""

    spec: str
    """The spec's name."""
    version: int
    """The spec's version number."""


class ManifestBatching(_Frozen):
    """What a model batches."""

    max_batch_size: int
    """The largest request (ensembles) or batch (preprocessing, inference) the model takes."""
    preferred_batch_sizes: tuple[int, ...] = ()
    """Batch sizes the dynamic batcher aims for (empty: the largest it can form)."""
    max_queue_delay_us: int | None = None
    """The dynamic batcher's queue delay in microseconds; None: no dynamic batcher (ensembles)."""


class ManifestModel(_Frozen):
    """One Triton model of the repository."""

    name: str
    """The Triton model name (its folder)."""
    role: ManifestRole
    """What the model does in the repository (`ManifestRole`)."""
    spec: str
    """The spec it was generated from (preprocessing: its first user)."""
    version: int
    """The spec version it serves (preprocessing: its first user's)."""
    backend: str
    """Triton backend (`ensemble` for ensembles)."""
    format: str | None = None
    """The inference format's name (inference models; see `generator.kinds.formats`)."""
    files: tuple[str, ...] = ()
    """Model files in its version folder `1/`, sorted (none for ensembles)."""
    batching: ManifestBatching
    """Its batching."""
    instances: int | None = None
    """Instances (preprocessing and inference models)."""
    threads: int | None = None
    """Intra-op threads per instance (inference models)."""
    cpu_units: int | None = None
    """Units of the rate limiter's `cpu` resource each instance takes (inference models in the
    limiter: their threads); None: not limited."""
    environment: str | None = None
    """Repository-relative path of its execution environment (preprocessing models that have one)."""
    depends_on: tuple[str, ...] = ()
    """The models an ensemble runs, in step order: preprocessing, then inference."""
    inputs: tuple[str, ...] = ()
    """Input tensor names (for ensembles: what clients send)."""
    outputs: tuple[str, ...] = ()
    """Output tensor names (for ensembles: what clients receive)."""
    priority: int | None = None
    """The request priority the entry point's clients send (ensembles; bulk: 2)."""
    users: tuple[ManifestUser, ...] = ()
    """Every spec version using a preprocessing model (shared by content), sorted."""
    sources: dict[str, str] = {}
    """Inference models: the content digest (`sha256:<hex>`, `generator.base.sources`) of each
    source of its spec version, by field path inside the version (`model.build.source`,
    `preprocessing.tokenizer`); a folder source's covers its whole folder. Changed weights show
    here as drift (`tritongen check`)."""

    @property
    def is_ensemble(self) -> bool:
        """Whether it is an ensemble (an entry point clients call)."""
        return self.role in ENSEMBLE_ROLES


class Manifest(_Frozen):
    """What `tritongen generate` planned for a repository (`MANIFEST_FILE`)."""

    schema_version: int
    """The manifest format (SCHEMA_VERSION)."""
    target: str
    """The target the repository was generated for (`generator.kinds.targets`)."""
    image: str
    """The server image the target's deploy files run."""
    cpu_budget: int
    """The CPU budget (cores) every model was sized for."""
    rate_limit_cores: int | None
    """Units of the rate limiter's `cpu` resource the server is started with (the CPU budget);
    None: the limiter off."""
    model_load_threads: int
    """tritonserver's `--model-load-thread-count`."""
    backend_configs: tuple[str, ...]
    """tritonserver's `--backend-config` values (`backend,setting=value`)."""
    memory_budget_mib: int | None = None
    """The pod memory (MiB) the repository was sized for (`repository.yaml`'s `memory_mib`)."""
    models: dict[str, ManifestModel]
    """Every Triton model by name."""

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(f"schema_version {self.schema_version}, this tritongen reads {SCHEMA_VERSION}")
        for key, model in self.models.items():
            if model.name != key:
                raise ValueError(f"models.{key} is named {model.name!r}")
            unknown = [name for name in model.depends_on if name not in self.models]
            if unknown:
                raise ValueError(f"models.{key} depends on {unknown}, which are not in the manifest")
        return self

    # --- reading and writing ------------------------------------------------------------

    def to_text(self) -> str:
        """The file's text: JSON with sorted keys, indented, with a trailing newline."""
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"

    def write(self, folder: Path) -> Path:
        """Write MANIFEST_FILE into `folder`; return its path."""
        path = folder / MANIFEST_FILE
        path.write_text(self.to_text(), encoding="utf-8")
        return path

    @classmethod
    def parse(cls, text: str, where: str = MANIFEST_FILE) -> Manifest:
        """A manifest from the file's text, or a ManifestError naming `where`."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as error:
            found = [
                f"{'.'.join(str(part) for part in problem['loc']) or '(top level)'}: "
                f"{problem['msg'].removeprefix('Value error, ')}"
                for problem in error.errors()
            ]
            more = len(found) - MAX_PROBLEMS_SHOWN
            problems = "; ".join(found[:MAX_PROBLEMS_SHOWN]) + (f"; and {more} more" if more > 0 else "")
            raise ManifestError(
                f"{where}: not a tritongen manifest ({problems}): regenerate it with `tritongen generate`"
            ) from None

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        """The manifest of a generated repository folder, or a ManifestError naming the file."""
        path = folder / MANIFEST_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ManifestError(f"{path} is missing: generate the repository with `tritongen generate`") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ManifestError(f"{path}: unreadable ({error})") from None
        return cls.parse(text, str(path))

    @classmethod
    def find(cls, folder: Path) -> Manifest | None:
        """The manifest, or None when the folder has none (a repository not made by tritongen)."""
        return cls.read(folder) if (folder / MANIFEST_FILE).is_file() else None

    # --- questions the tools ask --------------------------------------------------------

    def server_settings(self) -> ServerSettings:
        """What the server running this repository is started with."""
        return ServerSettings(self.rate_limit_cores, self.model_load_threads, self.backend_configs)

    def names(self) -> list[str]:
        """Every model name, sorted."""
        return sorted(self.models)

    def ensembles(self) -> list[ManifestModel]:
        """Every ensemble, by name."""
        return [model for _, model in sorted(self.models.items()) if model.is_ensemble]

    def _step(self, ensemble: str, role: ManifestRole) -> str:
        try:
            return next(name for name in self.models[ensemble].depends_on if self.models[name].role == role)
        except (KeyError, StopIteration):
            raise ManifestError(f"{MANIFEST_FILE}: {ensemble!r} is not an ensemble with a {role} step") from None

    def preprocessing(self, ensemble: str) -> str:
        """The preprocessing model an ensemble runs."""
        return self._step(ensemble, "preprocess")

    def inference_model(self, ensemble: str) -> str:
        """The inference model an ensemble runs."""
        return self._step(ensemble, "inference")

    def dependents(self, name: str) -> list[str]:
        """The ensembles that use a model, sorted."""
        return [model.name for model in self.ensembles() if name in model.depends_on]

    def entry_points(self, role: ManifestRole, spec: str | None = None) -> list[ManifestModel]:
        """Ensembles of one role (`online`: the `<name>` entry points clients call), of every
        spec or of `spec` only, by name."""
        return [model for model in self.ensembles() if model.role == role and spec in (None, model.spec)]

    def load_order(self, names: list[str] | None = None) -> list[str]:
        """`names` (default: every model) with each model after the models it depends on."""
        wanted = set(names if names is not None else self.models)
        ordered: list[str] = []

        def visit(name: str) -> None:
            if name in ordered or name not in wanted:
                return
            for dependency in self.models[name].depends_on:
                visit(dependency)
            ordered.append(name)

        for name in sorted(wanted):
            visit(name)
        return ordered


def read_manifest(repository: Path) -> Manifest:
    """The manifest of a generated repository folder (`Manifest.read`)."""
    return Manifest.read(repository)


def find_manifest(repository: Path) -> Manifest | None:
    """The manifest, or None when the folder has none (`Manifest.find`)."""
    return Manifest.find(repository)
