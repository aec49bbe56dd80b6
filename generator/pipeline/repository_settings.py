"""The repository budget: the cores and memory of the pod that serves every model.

`models/repository.yaml` (REPOSITORY_FILE, next to the specs; optional) holds the settings of
the repository as a whole, as a spec holds one model's:

    cores: 2            # the pod's cores: the rate limiter's `cpu` resource, instances x threads
    memory_mib: 16384   # the pod's memory: the expected memory (with headroom) must fit in it

`plan.py` sizes every model from the resolved `Budget` (cores, memory) and the specs' traffic
weights; `generate` fails, writing nothing, when the repository does not fit. The server-level
settings depend on the budget only (never on the number of specs): changing it needs a restart.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import Field, ValidationError

from generator.base.sources import StrictModel
from generator.pipeline.spec import REPOSITORY_FILE, SpecError, format_validation_error

DEFAULT_MEMORY_MIB = 16384
"""The memory budget when the settings name none: a 16 GiB pod."""
MEMORY_HEADROOM = 1.5
"""The pod's memory = 1.5 x the expected (measured) footprint: batches of long texts grow each
session's arena, allocator fragmentation. The budget check and the Kubernetes request use it."""


class RepositorySettings(StrictModel):
    """`models/repository.yaml`: the budget every model of the repository is sized from."""

    cores: int | None = Field(default=None, ge=1, le=1024)
    """CPU cores of the pod (the server's rate-limiter `cpu` resource; at least 1). Unset: the
    budget the existing repository was generated with (its manifest), else the cores this
    process may use. `tritongen generate --cores N` overrides it."""
    memory_mib: int = Field(default=DEFAULT_MEMORY_MIB, ge=1)
    """Memory of the pod in MiB (default 16384, 16 GiB): the repository's expected memory, from
    the measured footprints, times a headroom of 1.5 must fit in it, else `generate` fails."""


@dataclass(frozen=True)
class Budget:
    """The resolved budget a plan is sized for, and where each figure came from (messages)."""

    cores: int
    memory_mib: int = DEFAULT_MEMORY_MIB
    specs_dir: Path = Path("models")
    """The folder of the specs and REPOSITORY_FILE (messages name the files there)."""
    cores_from: str = "the CPU budget"
    """Where `cores` came from: `--cores`, the settings file, the manifest, the machine."""

    @property
    def settings_file(self) -> Path:
        """`<specs folder>/repository.yaml`."""
        return self.specs_dir / REPOSITORY_FILE

    def spec_file(self, name: str) -> Path:
        """`<specs folder>/<name>.yaml`."""
        return self.specs_dir / f"{name}.yaml"


def detected_cores() -> int:
    """CPU cores this process may use (affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def load_settings(specs_dir: Path) -> RepositorySettings:
    """The settings of `specs_dir/repository.yaml` (defaults when there is none), or a SpecError
    naming the file and the field."""
    path = specs_dir / REPOSITORY_FILE
    if not path.is_file():
        return RepositorySettings()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise SpecError(f"{path}: not readable YAML: {error}") from None
    if data is None:
        return RepositorySettings()
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping of repository settings, got {type(data).__name__}")
    if "versions" in data:
        raise SpecError(f"{path}: {REPOSITORY_FILE} holds the repository's settings, not a spec: rename the spec")
    try:
        return RepositorySettings.model_validate(data)
    except ValidationError as error:
        raise SpecError(format_validation_error(str(path), error)) from None


def resolve_budget(specs_dir: Path, cores: int | None = None, recorded_cores: int | None = None) -> Budget:
    """The budget of the specs in `specs_dir`: `cores` (`--cores`) over the settings file's, over
    `recorded_cores` (the existing repository's manifest), over the detected cores."""
    settings = load_settings(specs_dir)
    if cores is not None and cores < 1:
        raise SpecError(f"--cores: must be at least 1 (got {cores})")
    choices = (
        (cores, "--cores"),
        (settings.cores, f"{specs_dir / REPOSITORY_FILE}: cores"),
        (recorded_cores, "the existing repository's manifest (cpu_budget)"),
    )
    value, source = next(((v, s) for v, s in choices if v is not None), (detected_cores(), "the cores of this machine"))
    return Budget(value, settings.memory_mib, specs_dir, source)
