"""Environment specs: `envs/<name>.yml`, parsed and checked against a target's stub.

An environment spec is a conda `environment.yml` in `envs/` (`envs/<name>.yml`):

    name: textprep-tok023
    dependencies:
      - python=3.11
      - numpy<2
      - pip
      - pip:
          - tokenizers==0.23.1
          - tritongen-textprep==0.1.0

The pip section is the complete, exactly pinned list (installed with `--no-deps`). A
requirement whose name is a package of `backends/` (e.g. `tritongen-textprep`) is built from
that folder, and its pin must equal the package's version.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from generator import PROJECT_ROOT
from generator.environments.errors import EnvironmentSpecError
from generator.environments.stubs import SHIPPABLE_STUBS, PythonStub
from generator.sources import source_files

ENVS_DIR = PROJECT_ROOT / "envs"
BACKENDS_DIR = PROJECT_ROOT / "backends"


@dataclass(frozen=True)
class PipRequirement:
    """One exactly pinned line of the `pip:` section."""

    name: str
    version: str

    @property
    def normalized(self) -> str:
        return normalize_name(self.name)


@dataclass(frozen=True)
class EnvironmentSpec:
    """A parsed `envs/<name>.yml`."""

    name: str
    path: Path
    text: str
    conda: tuple[str, ...]
    pip: tuple[PipRequirement, ...]
    python: str
    """Minor version requested by the `python=3.X` dependency."""
    declared_channels: tuple[str, ...] = ()


@dataclass(frozen=True)
class LocalPackage:
    """A versioned Python package of `backends/` (a folder with a `pyproject.toml`)."""

    name: str
    version: str
    path: Path

    def source_digest(self) -> str:
        """sha256 over the package's source files (names and contents)."""
        digest = hashlib.sha256()
        for file in sorted(source_files(self.path)):
            digest.update(file.relative_to(self.path).as_posix().encode() + b"\0")
            digest.update(file.read_bytes() + b"\0")
        return digest.hexdigest()


def normalize_name(name: str) -> str:
    """PEP 503 normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def spec_path_for(name: str, envs_dir: Path = ENVS_DIR) -> Path:
    """`envs/<name>.yml` for an environment named in a model spec."""
    return envs_dir / f"{name}.yml"


# --------------------------------------------------------------------------- parsing


def parse_environment_spec(spec_path: Path) -> EnvironmentSpec:
    """Parse a conda `environment.yml`; raise `EnvironmentSpecError` naming env and cause."""
    from rattler import MatchSpec
    from rattler.exceptions import InvalidMatchSpecError

    label = spec_path.stem
    if not spec_path.is_file():
        raise EnvironmentSpecError(f"environment {label!r}: spec file {spec_path} does not exist")
    text = spec_path.read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise EnvironmentSpecError(f"environment {label!r}: {spec_path} is not YAML: {error}") from error
    if not isinstance(raw, dict):
        raise EnvironmentSpecError(f"environment {label!r}: {spec_path} must be a mapping")
    name = raw.get("name", label)
    if name != label:
        raise EnvironmentSpecError(f"environment {label!r}: `name: {name}` must equal the file name {spec_path.name}")
    unknown = set(raw) - {"name", "channels", "dependencies"}
    if unknown:
        raise EnvironmentSpecError(f"environment {name!r}: unknown keys {sorted(unknown)}")
    channels = tuple(str(c) for c in raw.get("channels") or ())
    dependencies = raw.get("dependencies")
    if not isinstance(dependencies, list) or not dependencies:
        raise EnvironmentSpecError(f"environment {name!r}: `dependencies` must be a non-empty list")
    conda: list[str] = []
    pip: list[PipRequirement] = []
    for item in dependencies:
        if isinstance(item, str):
            try:
                MatchSpec(item)
            except InvalidMatchSpecError as error:
                raise EnvironmentSpecError(
                    f"environment {name!r}: invalid conda dependency {item!r}: {error}"
                ) from error
            conda.append(item)
        elif isinstance(item, dict) and set(item) == {"pip"} and isinstance(item["pip"], list):
            pip.extend(_parse_pip_line(name, str(line)) for line in item["pip"])
        else:
            raise EnvironmentSpecError(
                f"environment {name!r}: a dependency must be a conda spec string or a `pip:` list, not {item!r}"
            )
    python_specs = [MatchSpec(c) for c in conda if MatchSpec(c).name.normalized == "python"]
    python = _python_minor(name, [str(s.version) for s in python_specs if s.version])
    if pip and not any(MatchSpec(c).name.normalized == "pip" for c in conda):
        raise EnvironmentSpecError(f"environment {name!r}: a `pip:` section needs `pip` among the conda dependencies")
    seen: set[str] = set()
    for requirement in pip:
        if requirement.normalized in seen:
            raise EnvironmentSpecError(f"environment {name!r}: pip package {requirement.name} twice")
        seen.add(requirement.normalized)
    return EnvironmentSpec(name, spec_path, text, tuple(conda), tuple(pip), python, channels)


_PIP_LINE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([A-Za-z0-9.+!_-]+)\s*$")


def _parse_pip_line(env: str, line: str) -> PipRequirement:
    match = _PIP_LINE.match(line)
    if not match:
        raise EnvironmentSpecError(
            f"environment {env!r}: pip line {line!r} must be an exact pin `name==version` "
            "(the pip section is installed with --no-deps: list every package, pinned)"
        )
    return PipRequirement(match.group(1), match.group(2))


def _python_minor(env: str, versions: Sequence[str]) -> str:
    if len(versions) != 1:
        raise EnvironmentSpecError(
            f"environment {env!r}: needs exactly one `python=3.X` dependency (the stub's "
            "Python minor version must be fixed)"
        )
    match = re.fullmatch(r"=?=?\s*(3\.\d+)(\.\*|\.\d+)?", versions[0].strip())
    if not match:
        raise EnvironmentSpecError(
            f"environment {env!r}: python must be pinned to one minor version, e.g. "
            f"`python=3.11`, not `python {versions[0]}`"
        )
    return match.group(1)


def local_packages(backends_dir: Path = BACKENDS_DIR) -> dict[str, LocalPackage]:
    """The versioned Python packages of `backends/`, by normalized name."""
    found: dict[str, LocalPackage] = {}
    if not backends_dir.is_dir():
        return found
    for pyproject in sorted(backends_dir.glob("*/pyproject.toml")):
        data = tomllib.loads(pyproject.read_text())
        project = data.get("project", {})
        if "name" in project and "version" in project:
            package = LocalPackage(project["name"], str(project["version"]), pyproject.parent)
            found[normalize_name(package.name)] = package
    return found


# --------------------------------------------------------------------------- checks


def check_spec_for_stub(spec: EnvironmentSpec, stub: PythonStub, backends_dir: Path, ship_stub: bool = False) -> None:
    """Raise `EnvironmentSpecError` if `spec` cannot work under `stub`: its Python (any
    shippable one when `ship_stub`), `numpy<2` for a 2.51 stub, the pins of `backends/` packages."""
    from rattler import MatchSpec, Version

    if spec.python != stub.python and not ship_stub:
        raise EnvironmentSpecError(
            f"environment {spec.name!r}: Python {spec.python} does not match the target "
            f"stub's Python {stub.python} ({stub.source}); the python backend stub embeds "
            "one Python minor version, so an environment must use the same one (or ask to "
            "ship a matching stub in the model folder)"
        )
    if spec.python != stub.python and spec.python not in SHIPPABLE_STUBS:
        raise EnvironmentSpecError(
            f"environment {spec.name!r}: no python backend stub for Python {spec.python} to "
            f"ship (nvidia-pytriton bundles stubs for {', '.join(SHIPPABLE_STUBS)})"
        )
    if stub.numpy_below_2:
        numpy_specs = [MatchSpec(c) for c in spec.conda if MatchSpec(c).name.normalized == "numpy"]
        numpy_pins = [r for r in spec.pip if r.normalized == "numpy"]
        reason = (
            f"the Triton {stub.triton} python backend stub is built against numpy 1.x: with "
            "numpy 2 the model loads, then the stub crashes on the first BYTES input"
        )
        for numpy_spec in numpy_specs:
            if numpy_spec.version is None or _matches_version(numpy_spec, Version("2.0.0")):
                raise EnvironmentSpecError(
                    f"environment {spec.name!r}: `{numpy_spec}` allows numpy>=2; write `numpy<2` ({reason})"
                )
        for pin in numpy_pins:
            if Version(pin.version) >= Version("2"):
                raise EnvironmentSpecError(
                    f"environment {spec.name!r}: pip pins numpy=={pin.version}; it must be <2 ({reason})"
                )
    available = local_packages(backends_dir)
    for requirement in spec.pip:
        package = available.get(requirement.normalized)
        if package and package.version != requirement.version:
            raise EnvironmentSpecError(
                f"environment {spec.name!r}: pins {requirement.name}=={requirement.version} but "
                f"{package.path.relative_to(package.path.parent.parent)} is version "
                f"{package.version}; a model version must run the preprocessing version it was "
                "trained with: keep that version's package source, or update the pin"
            )


def _matches_version(spec: Any, version: Any) -> bool:
    from rattler import VersionSpec

    return bool(VersionSpec(spec.version).matches(version))
