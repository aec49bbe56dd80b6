"""The repository manifest: the plan's facts, written by generate, read by the tools.

`tritongen serve`, `update`, `tune`, the soak harness and the CLI read these facts here
instead of parsing config headers, model names or config text. The file is part of the
generated output (deterministic, drift-checked, the same for every target).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from generator.errors import TritongenError
from generator.pipeline.plan import MANIFEST_FILE


class ManifestError(TritongenError, ValueError):
    """The repository has no readable manifest (regenerate it with `tritongen generate`)."""


@dataclass(frozen=True)
class ModelEntry:
    """One Triton model of the repository."""

    name: str
    role: str
    """`preprocess`, `inference`, or an ensemble role: `online`, `bulk`, `pinned`."""
    spec: str
    version: int
    backend: str
    depends_on: tuple[str, ...]
    instances: int | None = None
    threads: int | None = None
    environment: str | None = None
    max_batch_size: int | None = None
    inputs: tuple[str, ...] = ()
    """Client inputs (ensembles)."""
    outputs: tuple[str, ...] = ()
    """Client outputs (ensembles)."""
    priority: int | None = None
    """The request priority the entry point's clients send (ensembles; bulk: 2)."""
    users: tuple[tuple[str, int], ...] = ()
    """(spec, version) of every spec version using a preprocessing model (shared by content;
    `spec` and `version` above are the first of them)."""

    @property
    def is_ensemble(self) -> bool:
        return self.backend == "ensemble"


@dataclass(frozen=True)
class Manifest:
    """What `tritongen generate` planned for a repository."""

    cpu_budget: int
    rate_limit_cores: int | None
    models: dict[str, ModelEntry]
    model_load_threads: int | None = None
    """tritonserver's `--model-load-thread-count` (None: Triton's default)."""
    backend_configs: tuple[str, ...] = ()
    """`--backend-config` values of every target (the `ngc` launchers add their own)."""

    def names(self) -> list[str]:
        return sorted(self.models)

    def ensembles(self) -> list[ModelEntry]:
        return [m for name, m in sorted(self.models.items()) if m.is_ensemble]

    def preprocessing(self, ensemble: str) -> str:
        """The preprocessing model an ensemble runs (its first step whose role is `preprocess`)."""
        return next(d for d in self.models[ensemble].depends_on if self.models[d].role == "preprocess")

    def dependents(self, name: str) -> list[str]:
        """The ensembles that use a model, sorted."""
        return [m.name for m in self.ensembles() if name in m.depends_on]

    def entry_points(self, role: str) -> list[ModelEntry]:
        """Ensembles of one role (`online`: the `<name>` entry points clients call)."""
        return [m for m in self.ensembles() if m.role == role]

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


def parse_manifest(data: dict[str, Any], where: str = MANIFEST_FILE) -> Manifest:
    """A Manifest from the file's JSON object."""
    try:
        models = {
            name: ModelEntry(
                name=name,
                role=entry["role"],
                spec=entry["spec"],
                version=int(entry["version"]),
                backend=entry["backend"],
                depends_on=tuple(entry.get("depends_on", ())),
                instances=entry.get("instances"),
                threads=entry.get("threads"),
                environment=entry.get("environment"),
                max_batch_size=entry.get("max_batch_size"),
                inputs=tuple(entry.get("inputs", ())),
                outputs=tuple(entry.get("outputs", ())),
                priority=entry.get("priority"),
                users=tuple((user["spec"], int(user["version"])) for user in entry.get("users", ())),
            )
            for name, entry in data["models"].items()
        }
        return Manifest(
            int(data["cpu_budget"]),
            data.get("rate_limit_cores"),
            models,
            data.get("model_load_threads"),
            tuple(data.get("backend_configs", ())),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ManifestError(f"{where}: not a tritongen manifest ({error!r}): run `tritongen generate`") from None


def read_manifest(repository: Path) -> Manifest:
    """The manifest of a generated repository folder."""
    path = repository / MANIFEST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path} is missing: generate the repository with `tritongen generate`") from None
    except json.JSONDecodeError as error:
        raise ManifestError(f"{path}: invalid JSON ({error})") from None
    return parse_manifest(data, str(path))


def find_manifest(repository: Path) -> Manifest | None:
    """The manifest, or None when the folder has none (a repository not made by tritongen)."""
    return read_manifest(repository) if (repository / MANIFEST_FILE).is_file() else None
