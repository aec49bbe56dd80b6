"""Per-version Python execution environments for Triton's python backend (EXECUTION_ENV_PATH).

An environment spec is a conda `environment.yml` in `envs/` (`envs/<name>.yml`):

    name: textprep-tok023
    dependencies:
      - python=3.11
      - numpy<2
      - pip
      - pip:
          - tokenizers==0.23.1
          - tritongen-textprep==0.1.0

Building one:
1. parse and check it against the target's stub (Python minor version, `numpy<2`);
2. solve the conda part with py-rattler from the configured channels (default `conda-forge`,
   or the offline channel of `generator.environments.channel`), and install it into
   `<cache>/<hash>/`;
3. install the pip part with the environment's own pip, `--no-deps`: the pip section is the
   complete, exactly pinned list. A requirement whose name is a package of `backends/`
   (e.g. `tritongen-textprep`) is built from that folder, and its pin must equal the
   package's version;
4. add an activation hook that clears PYTHONPATH/PYTHONHOME (the 2.51 stub embeds Python
   with an isolated config and ignores them, but any Python run after `bin/activate` would
   let the server's PYTHONPATH shadow the environment's packages), remove pip, tests and
   caches;
5. pack it with conda-pack into `<cache>/<name>-<hash>.tar.gz`.

The hash covers everything that goes in: the spec text, the solved conda packages (name,
version, build), the sources of the `backends/` packages it installs, the platform, the
target Python and the recipe version; not machine-specific paths or channel URLs, so a fresh
clone computes the same names. An unchanged environment is never rebuilt; a changed one gets a new file
name, so that a reloading Triton picks it up (Triton issue #4783).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from generator import PROJECT_ROOT  # noqa: E402
from generator.environments import channel as conda_channel
from generator.errors import TritongenError
from generator.sources import source_files

ENVS_DIR = PROJECT_ROOT / "envs"
BACKENDS_DIR = PROJECT_ROOT / "backends"
DEFAULT_CACHE_DIR = PROJECT_ROOT / "build" / "envs"
DEFAULT_CHANNELS: tuple[str, ...] = ("conda-forge",)
CHANNELS_VARIABLE = "TRITONGEN_CONDA_CHANNELS"
"""Comma-separated channels overriding the project setting (one-off runs, CI)."""
SETTINGS_FILE = PROJECT_ROOT / "build" / "tritongen.toml"
"""The project's local settings: `[environments] channels = [...]`, written by `tritongen envs
channel`. Machine-specific (a `file://` URL of this checkout), so it lives in the git-ignored
build/ folder next to the channel it names; deleting build/ forgets both."""
PLATFORM: str = conda_channel.PLATFORM
RECIPE_VERSION = "1"
"""Bump when the build recipe (slimming, hook, pip flags) changes: every hash changes."""
HASH_LENGTH = 16
SHIPPABLE_STUBS = ("3.8", "3.9", "3.10", "3.11", "3.12", "3.13")
"""Python versions whose stub the nvidia-pytriton wheel bundles (`python_backend_stubs/3.X`)."""
ISOLATION_HOOK = "etc/conda/activate.d/tritongen-isolate.sh"


@dataclass(frozen=True)
class StubTarget:
    """The python backend stub a target server runs environments with."""

    name: str
    python: str
    triton: str
    numpy_below_2: bool
    source: str


_LOCAL_STUB = StubTarget("local", "3.11", "2.51.0", True, "nvidia-pytriton 0.7.0's embedded server, project Python")
_NGC_2410_STUB = StubTarget(
    "ngc-24.10", "3.10", "2.51.0", True,
    "nvcr.io/nvidia/tritonserver:24.10-py3: Ubuntu 22.04, Python 3.10",
)  # fmt: skip
STUB_TARGETS: Mapping[str, StubTarget] = {
    "local": _LOCAL_STUB,
    "ngc": _NGC_2410_STUB,
    "ngc-24.10": _NGC_2410_STUB,
}
"""Stub Python per generator target (`ngc` is the 24.10 image the generator targets).

24.10 = Triton 2.51.0, whose build.py (tag v2.51.0) builds on Ubuntu 22.04 (`ubuntu:22.04`,
CUDA `ubuntu2204` repositories) and links the stub against `libpython3-dev`, i.e. Python
3.10, as for every release since 23.05 (Triton issue #5895); releases on Ubuntu 24.04 moved
to 3.12 (issue #8357)."""


class EnvironmentSpecError(TritongenError, ValueError):
    """An environment spec is invalid or cannot work on the target (names env and cause)."""


class EnvironmentBuildError(TritongenError, RuntimeError):
    """An environment could not be built (names the environment and the failing step)."""


Progress = Callable[[str], None]


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


@dataclass(frozen=True)
class BuiltEnvironment:
    """A packed environment in the build cache."""

    name: str
    content_hash: str
    tarball: Path
    python_version: str
    packages: dict[str, str]
    cached: bool = False
    """True when an existing build was reused."""
    build_seconds: float = 0.0
    prefix: Path | None = None
    """The build prefix, when kept (`keep_prefix=True`)."""


def normalize_name(name: str) -> str:
    """PEP 503 normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def default_channels(settings: Path | None = None) -> list[str]:
    """Channels when no `--channel` is given: $TRITONGEN_CONDA_CHANNELS, else the project
    setting (`build/tritongen.toml`, see `remember_channels`), else `conda-forge`."""
    configured = os.environ.get(CHANNELS_VARIABLE, "")
    channels = [c.strip() for c in configured.split(",") if c.strip()]
    return channels or recorded_channels(settings) or list(DEFAULT_CHANNELS)


def recorded_channels(settings: Path | None = None) -> list[str]:
    """The channels of the project setting ([] when none is recorded)."""
    path = settings or SETTINGS_FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise EnvironmentSpecError(f"{path}: unreadable project setting ({error}); fix or delete it") from error
    channels = data.get("environments", {}).get("channels", [])
    if not isinstance(channels, list) or not all(isinstance(c, str) and c for c in channels):
        raise EnvironmentSpecError(f"{path}: [environments] channels must be a list of channel URLs")
    return list(channels)


def remember_channels(channels: Sequence[str], settings: Path | None = None) -> Path:
    """Record `channels` as the project's channels (read by every later generate, check and
    `envs build`); written atomically."""
    path = settings or SETTINGS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    # JSON strings are valid TOML basic strings.
    listed = ", ".join(json.dumps(c) for c in channels)
    text = (
        "# Written by `tritongen envs channel`: conda channels of this checkout's execution\n"
        f"# environments (overridden by --channel and ${CHANNELS_VARIABLE}).\n"
        f"[environments]\nchannels = [{listed}]\n"
    )
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
    return path


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


def resolve_target_python(target_python: str) -> StubTarget:
    """A `StubTarget` from a target name (`local`, `ngc-24.10`) or a Python minor version."""
    if target_python in STUB_TARGETS:
        return STUB_TARGETS[target_python]
    if re.fullmatch(r"3\.\d+", target_python):
        return StubTarget(target_python, target_python, "2.51.0", True, f"a Python {target_python} stub")
    raise EnvironmentSpecError(
        f"unknown target {target_python!r}: use a Python minor version (3.11) or one of {sorted(STUB_TARGETS)}"
    )


def check_environment_spec(
    spec_path: Path,
    target_python: str,
    *,
    channels: Sequence[str] | None = None,
    backends_dir: Path = BACKENDS_DIR,
    ship_stub: bool = False,
) -> None:
    """Raise `EnvironmentSpecError` if the spec cannot work on the target.

    Checks the stub's Python version (any version with a bundled stub when `ship_stub`:
    the model then carries its own stub, see `place_stub`), `numpy<2` (2.51 stub), the pins
    of `backends/` packages, and, when `channels` is given, that the conda part solves.
    """
    spec = parse_environment_spec(spec_path)
    _check_spec(spec, resolve_target_python(target_python), backends_dir, ship_stub)
    if channels is not None:
        _solve(spec, channels)


def _check_spec(spec: EnvironmentSpec, target: StubTarget, backends_dir: Path, ship_stub: bool = False) -> None:
    from rattler import MatchSpec, Version

    if spec.python != target.python and not ship_stub:
        raise EnvironmentSpecError(
            f"environment {spec.name!r}: Python {spec.python} does not match the target "
            f"stub's Python {target.python} ({target.source}); the python backend stub embeds "
            "one Python minor version, so an environment must use the same one (or ask to "
            "ship a matching stub in the model folder)"
        )
    if spec.python != target.python and spec.python not in SHIPPABLE_STUBS:
        raise EnvironmentSpecError(
            f"environment {spec.name!r}: no python backend stub for Python {spec.python} to "
            f"ship (nvidia-pytriton bundles stubs for {', '.join(SHIPPABLE_STUBS)})"
        )
    if target.numpy_below_2:
        numpy_specs = [MatchSpec(c) for c in spec.conda if MatchSpec(c).name.normalized == "numpy"]
        numpy_pins = [r for r in spec.pip if r.normalized == "numpy"]
        reason = (
            f"the Triton {target.triton} python backend stub is built against numpy 1.x: with "
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


def _solve(spec: EnvironmentSpec, channels: Sequence[str]) -> list[Any]:
    from rattler import solve
    from rattler.exceptions import SolverError

    try:
        records: list[Any] = conda_channel.run_rattler(
            solve(
                sources=list(channels),
                specs=list(spec.conda),
                platforms=[PLATFORM, "noarch"],  # type: ignore[list-item]
                virtual_packages=[],
            )
        )
    except SolverError as error:
        raise EnvironmentSpecError(
            f"environment {spec.name!r}: the conda dependencies {list(spec.conda)} cannot be "
            f"solved from channels {list(channels)}:\n{error}"
        ) from error
    except Exception as error:  # noqa: BLE001 - rattler raises several network/IO types
        raise EnvironmentSpecError(
            f"environment {spec.name!r}: cannot read channels {list(channels)}: "
            f"{type(error).__name__}: {error}\n(offline? build a local channel with "
            "`tritongen envs channel`: the project then uses it)"
        ) from error
    return records


# --------------------------------------------------------------------------- hashing


def content_hash(
    spec: EnvironmentSpec,
    records: Sequence[Any],
    packages: Sequence[LocalPackage],
    target_python: str,
    extra_files: Sequence[Path] = (),
) -> str:
    """Hash of everything that goes into an environment."""
    payload = {
        "recipe": [RECIPE_VERSION, _ISOLATION_SCRIPT],
        "spec": spec.text,
        "platform": PLATFORM,
        "python": [spec.python, target_python],
        "extra": {f.name: conda_channel.file_sha256(f) for f in extra_files},
        # name, version, build and subdir identify a conda package (artifacts in a channel are
        # immutable). Not its sha256: the offline channel is rebuilt on every machine (CI's
        # fresh clone), and the hash must not change with it, nor with the channel's URL.
        "conda": sorted(f"{r.subdir}/{r.name.normalized}={r.version}={r.build}" for r in records),
        "local": {p.name: [p.version, p.source_digest()] for p in packages},
    }
    encoded = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(encoded).hexdigest()[:HASH_LENGTH]


# --------------------------------------------------------------------------- building


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialize builds of one environment between processes sharing the cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _manifest_path(cache_dir: Path, name: str, digest: str) -> Path:
    return cache_dir / f"{name}-{digest}.json"


def _clean_child_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "CONDA"))}
    env["PYTHONNOUSERSITE"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(step: str, env_name: str, command: Sequence[str], **kwargs: Any) -> str:
    result = subprocess.run(list(command), capture_output=True, text=True, check=False, **kwargs)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-25:])
        raise EnvironmentBuildError(
            f"environment {env_name!r}: {step} failed (exit {result.returncode}):\n$ {' '.join(command)}\n{tail}"
        )
    return result.stdout


def _build_local_wheel(package: LocalPackage, wheel_dir: Path, env_name: str) -> Path:
    """Build a wheel of a `backends/` package with the generator's own Python."""
    wheel_dir.mkdir(parents=True, exist_ok=True)
    base = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheel_dir)]
    with tempfile.TemporaryDirectory(prefix="textprep-src-") as work:
        # Build from a copy: setuptools writes build/ and *.egg-info into the source tree.
        source = Path(work) / package.path.name
        shutil.copytree(
            package.path,
            source,
            ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"),
        )
        try:
            _run(f"building {package.name}", env_name, [*base, "--no-build-isolation", str(source)])
        except EnvironmentBuildError:
            _run(f"building {package.name}", env_name, [*base, str(source)])
    wanted = normalize_name(package.name).replace("-", "_")
    wheels = [
        w for w in wheel_dir.glob("*.whl")
        if normalize_name(w.name.split("-")[0]).replace("-", "_") == wanted
        and w.name.split("-")[1] == package.version
    ]  # fmt: skip
    if not wheels:
        raise EnvironmentBuildError(f"environment {env_name!r}: no wheel of {package.name} built")
    return max(wheels, key=lambda w: w.stat().st_mtime)


_ISOLATION_SCRIPT = """\
# Written by tritongen: only this environment decides what its Python imports.
# The python backend starts the stub as `source bin/activate && exec env LD_LIBRARY_PATH=...
# stub`, inheriting the server's environment. The 2.51 stub embeds Python with an isolated
# config (it ignores PYTHONPATH and finds this prefix through `python3` on PATH); any other
# Python run after activation would let the server's PYTHONPATH shadow the packages here.
unset PYTHONPATH PYTHONHOME PYTHONSTARTUP PYTHONUSERBASE PYTHONSAFEPATH
export PYTHONNOUSERSITE=1
"""


def _slim(prefix: Path, python_minor: str) -> None:
    """Drop files a serving environment never needs (not managed by conda: pip installs)."""
    site = prefix / "lib" / f"python{python_minor}" / "site-packages"
    managed = _managed_files(prefix)
    for path in sorted(site.rglob("*"), reverse=True):
        relative = path.relative_to(prefix).as_posix()
        removable = path.name in ("__pycache__", "tests") and not path.is_symlink()
        if removable and path.is_dir() and not any(m.startswith(relative + "/") for m in managed):
            shutil.rmtree(path, ignore_errors=True)
    for cache in ("pkgs", ".cache"):
        shutil.rmtree(prefix / cache, ignore_errors=True)


def _managed_files(prefix: Path) -> set[str]:
    files: set[str] = set()
    for record in (prefix / "conda-meta").glob("*.json"):
        data = json.loads(record.read_text())
        files.update(data.get("files", []))
    return files


def _installed_packages(prefix: Path, python_minor: str) -> dict[str, str]:
    """Name -> version of everything in the environment (conda records and dist-infos)."""
    packages: dict[str, str] = {}
    for record in (prefix / "conda-meta").glob("*.json"):
        data = json.loads(record.read_text())
        packages[normalize_name(data["name"])] = data["version"]
    site = prefix / "lib" / f"python{python_minor}" / "site-packages"
    for metadata in site.glob("*.dist-info/METADATA"):
        fields = dict(
            line.split(": ", 1) for line in metadata.read_text(errors="replace").splitlines()[:20]
            if ": " in line
        )  # fmt: skip
        if "Name" in fields and "Version" in fields:
            packages.setdefault(normalize_name(fields["Name"]), fields["Version"])
    return dict(sorted(packages.items()))


def _install_conda(records: list[Any], prefix: Path, package_cache: Path) -> None:
    from rattler import install

    conda_channel.run_rattler(install(records, target_prefix=prefix, cache_dir=package_cache, show_progress=False))


def _remove_conda_packages(records: list[Any], prefix: Path, names: set[str], package_cache: Path) -> None:
    """Uninstall conda packages `names` through rattler (keeps conda-meta consistent)."""
    from rattler import PrefixRecord, install

    installed = [PrefixRecord.from_path(p) for p in sorted((prefix / "conda-meta").glob("*.json"))]
    kept = [r for r in records if r.name.normalized not in names]
    conda_channel.run_rattler(
        install(
            kept, target_prefix=prefix, cache_dir=package_cache, installed_packages=installed,
            show_progress=False,
        )
    )  # fmt: skip


def _pip_install(
    spec: EnvironmentSpec,
    available: Mapping[str, LocalPackage],
    python: Path,
    env: Mapping[str, str],
    progress: Progress,
) -> None:
    """Install the pip section with the environment's own pip, `--no-deps`."""
    # A private wheel folder: concurrent builds of other environments build the same wheels.
    with tempfile.TemporaryDirectory(prefix="tritongen-wheels-") as wheels:
        lines: list[str] = []
        for requirement in spec.pip:
            if requirement.normalized in available:
                package = available[requirement.normalized]
                progress(f"[{spec.name}] building {package.name} {package.version} from {package.path}")
                lines.append(str(_build_local_wheel(package, Path(wheels), spec.name)))
            else:
                lines.append(f"{requirement.name}=={requirement.version}")
        progress(f"[{spec.name}] pip install --no-deps {' '.join(Path(x).name for x in lines)}")
        _run(
            "pip install", spec.name,
            [str(python), "-m", "pip", "install", "--no-deps", "--no-compile",
             "--no-cache-dir", "--no-warn-script-location", *lines],
            env=dict(env),
        )  # fmt: skip


def build_environment(
    spec_path: Path,
    *,
    channels: Sequence[str],
    target_python: str,
    cache_dir: Path,
    progress: Progress,
    backends_dir: Path = BACKENDS_DIR,
    keep_pip: bool = False,
    ship_stub: bool = False,
    keep_prefix: bool = False,
) -> BuiltEnvironment:
    """Build (or reuse) the packed environment of `spec_path` and return where it is.

    `target_python` is the target stub's Python minor version ("3.11") or a target name
    (`local`, `ngc-24.10`). Raises `EnvironmentSpecError` before building anything if the
    spec cannot work, `EnvironmentBuildError` if a build step fails. `ship_stub` allows a
    Python other than the target's: the environment then also holds what the stub of its own
    Python needs (libcudart of nvidia-pytriton), and the model folder must get that stub
    (`place_stub`). The build prefix `<cache>/<hash>/` is deleted after packing unless
    `keep_prefix`.
    """
    started = time.monotonic()
    spec = parse_environment_spec(spec_path)
    target = resolve_target_python(target_python)
    _check_spec(spec, target, backends_dir, ship_stub)
    stub_libraries = shipped_stub_libraries() if spec.python != target.python else []
    available = local_packages(backends_dir)
    used_local = [available[r.normalized] for r in spec.pip if r.normalized in available]
    progress(f"[{spec.name}] solving {', '.join(spec.conda)} from {', '.join(channels)}")
    records = _solve(spec, channels)
    digest = content_hash(spec, records, used_local, target.python, stub_libraries)
    cache_dir = cache_dir.resolve()
    tarball = cache_dir / f"{spec.name}-{digest}.tar.gz"
    manifest = _manifest_path(cache_dir, spec.name, digest)
    prefix = cache_dir / digest
    with _locked(cache_dir / f".{spec.name}-{digest}.lock"):
        if tarball.is_file() and manifest.is_file():
            data = json.loads(manifest.read_text())
            progress(f"[{spec.name}] unchanged ({digest}): {tarball.name}")
            return BuiltEnvironment(
                spec.name, digest, tarball, data["python_version"], data["packages"],
                cached=True, build_seconds=data.get("build_seconds", 0.0),
                prefix=prefix if prefix.is_dir() else None,
            )  # fmt: skip
        shutil.rmtree(prefix, ignore_errors=True)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        progress(f"[{spec.name}] installing {len(records)} conda packages into {prefix}")
        _install_conda(records, prefix, cache_dir / "pkgs")
        python = prefix / "bin" / "python3"
        if not python.exists():
            raise EnvironmentBuildError(f"environment {spec.name!r}: no bin/python3 after install")
        env = _clean_child_environment()
        if spec.pip:
            _pip_install(spec, available, python, env, progress)
        for library in stub_libraries:
            progress(f"[{spec.name}] adding {library.name} for the shipped Python {spec.python} stub")
            shutil.copy2(library, prefix / "lib" / library.name)
        hook = prefix / ISOLATION_HOOK
        hook.parent.mkdir(parents=True, exist_ok=True)
        hook.write_text(_ISOLATION_SCRIPT)
        if not keep_pip and any(r.name.normalized == "pip" for r in records):
            progress(f"[{spec.name}] removing pip from the environment")
            _remove_conda_packages(records, prefix, {"pip"}, cache_dir / "pkgs")
            site = prefix / "lib" / f"python{spec.python}" / "site-packages"
            for leftover in [site / "pip", *site.glob("pip-*.dist-info")]:
                shutil.rmtree(leftover, ignore_errors=True)  # caches pip wrote while running
        _slim(prefix, spec.python)
        version = _run(
            "python --version", spec.name,
            [str(python), "-c", "import platform; print(platform.python_version())"], env=env,
        ).strip()  # fmt: skip
        packages = _installed_packages(prefix, spec.python)
        progress(f"[{spec.name}] packing with conda-pack -> {tarball.name}")
        _pack(prefix, tarball, spec.name)
        if not keep_prefix:
            shutil.rmtree(prefix, ignore_errors=True)
        seconds = time.monotonic() - started
        manifest.write_text(
            json.dumps(
                {"name": spec.name, "content_hash": digest, "python_version": version,
                 "packages": packages, "build_seconds": round(seconds, 1),
                 "tarball": tarball.name, "target": target.name},
                indent=2,
            )
        )  # fmt: skip
        size = tarball.stat().st_size / 1e6
        progress(f"[{spec.name}] built in {seconds:.0f}s: {tarball.name} ({size:.1f} MB)")
        return BuiltEnvironment(
            spec.name, digest, tarball, version, packages, cached=False,
            build_seconds=seconds, prefix=prefix if keep_prefix else None,
        )  # fmt: skip


def _pack(prefix: Path, tarball: Path, env_name: str) -> None:
    import conda_pack

    partial = tarball.with_name(tarball.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        conda_pack.pack(
            prefix=str(prefix), output=str(partial), format="tar.gz", force=True,
            compress_level=4, n_threads=1, verbose=False,
        )  # fmt: skip
    except conda_pack.CondaPackException as error:
        raise EnvironmentBuildError(f"environment {env_name!r}: conda-pack failed: {error}") from error
    partial.replace(tarball)


def prune_cache(cache_dir: Path, keep: Sequence[BuiltEnvironment]) -> list[Path]:
    """Delete cached tarballs, manifests and prefixes of environments not in `keep`."""
    wanted = {b.content_hash for b in keep}
    removed: list[Path] = []
    for path in sorted(cache_dir.glob("*")):
        pattern = rf"(?:.+-)?([0-9a-f]{{{HASH_LENGTH}}})(?:\.tar\.gz|\.json|\.unpacked)?"
        match = re.fullmatch(pattern, path.name)
        if match and match.group(1) not in wanted:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed


def shipped_stub_libraries() -> list[Path]:
    """Libraries a bundled stub needs when it runs outside the wheel (its RPATH is relative)."""
    from generator.serving.tritonserver import find_triton

    libraries = sorted(find_triton().libs_dir.glob("libcudart-*.so*"))
    if not libraries:
        raise EnvironmentBuildError("nvidia_pytriton.libs has no libcudart-*.so* for the stub")
    return libraries


def place_stub(model_dir: Path, python_minor: str) -> Path:
    """Copy the python backend stub of `python_minor` to `<model_dir>/triton_python_backend_stub`.

    The python backend prefers this stub over its own for the model; the environment (built
    with `ship_stub=True`) supplies libpython and libcudart through `<env>/lib`.
    """
    from generator.serving.tritonserver import find_triton

    stub = find_triton().stub(python_minor)
    if not stub.is_file():
        raise EnvironmentSpecError(f"no python backend stub for Python {python_minor}: {stub}")
    target = model_dir / "triton_python_backend_stub"
    shutil.copy2(stub, target)
    target.chmod(0o755)
    return target


def unpack_environment(tarball: Path, destination: Path) -> Path:
    """Extract a packed environment into `destination` (the 'unpacked folder' option).

    Triton uses a folder as is (no extraction at load): faster model loads, larger repository.
    """
    if destination.exists():
        shutil.rmtree(destination)
    partial = destination.with_name(destination.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with tarfile.open(tarball, "r:gz") as archive:
        archive.extractall(partial, filter="tar")
    partial.replace(destination)
    return destination


# --------------------------------------------------------------------------- CLI


def add_envs_subcommands(subparsers: Any) -> None:
    """Register `tritongen envs channel` and `tritongen envs build` on an argparse subparsers."""
    envs = subparsers.add_parser("envs", help="build Python execution environments (conda-pack)")
    actions = envs.add_subparsers(dest="envs_command", required=True)

    channel = actions.add_parser(
        "channel",
        help="build the offline file:// conda channel (pyenv CPythons, pip, numpy) and make it the project's",
        description="Build (or complete) the offline channel and record it in build/tritongen.toml: every later "
        "generate, check and envs build uses it. With --channel, record those channels instead (nothing "
        f"is built). Precedence: --channel of a command > ${CHANNELS_VARIABLE} > build/tritongen.toml > "
        "conda-forge.",
    )
    channel.add_argument("--dir", type=Path, default=conda_channel.DEFAULT_CHANNEL_DIR)
    channel.add_argument(
        "--channel", action="append", dest="channels", metavar="URL",
        help="record this channel (repeatable; e.g. a site mirror) instead of building the offline one",
    )  # fmt: skip
    channel.add_argument(
        "--python", action="append", dest="pythons", metavar="3.X",
        help=f"CPython minor version to package (repeatable; default "
        f"{' '.join(conda_channel.DEFAULT_PYTHONS)})",
    )  # fmt: skip
    channel.add_argument("--numpy", default=conda_channel.DEFAULT_NUMPY)
    channel.add_argument("--pip", default=conda_channel.DEFAULT_PIP)
    channel.set_defaults(func=_cmd_channel)

    build = actions.add_parser("build", help="build and pack environments of envs/")
    build.add_argument("names", nargs="*", help="environment names or .yml paths (default: all)")
    build.add_argument(
        "--channel", action="append", dest="channels",
        help=f"conda channel (repeatable; default ${CHANNELS_VARIABLE}, else the project's channel recorded by "
        "`tritongen envs channel`, else conda-forge)",
    )  # fmt: skip
    build.add_argument("--target", default="local", help="stub target: local, ngc-24.10 or 3.X")
    build.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    build.add_argument("--unpack", type=Path, help="also extract each environment under this folder")
    build.add_argument("--ship-stub", action="store_true", help="allow another Python (model ships its stub)")
    build.add_argument(
        "--prune", action="store_true",
        help="then delete every other build from the cache (older hashes, other targets)",
    )  # fmt: skip
    build.set_defaults(func=_cmd_build)


def _cmd_channel(args: argparse.Namespace) -> int:
    channels = args.channels
    if not channels:
        conda_channel.build_channel(
            args.dir, pythons=args.pythons or conda_channel.DEFAULT_PYTHONS,
            numpy_version=args.numpy, pip_version=args.pip,
        )  # fmt: skip
        channels = [conda_channel.channel_url(args.dir)]
    path = remember_channels(channels)
    print(f"project channels: {', '.join(channels)} (recorded in {path})", flush=True)
    if os.environ.get(CHANNELS_VARIABLE):
        print(f"note: ${CHANNELS_VARIABLE} is set and takes precedence over it in this shell", flush=True)
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    paths = [Path(n) if n.endswith((".yml", ".yaml")) else spec_path_for(n) for n in args.names] or sorted(
        ENVS_DIR.glob("*.yml")
    )
    channels = args.channels or default_channels()
    failed = 0
    kept: list[BuiltEnvironment] = []
    for path in paths:
        try:
            built = build_environment(
                path, channels=channels, target_python=args.target, cache_dir=args.cache_dir,
                progress=print, ship_stub=args.ship_stub,
            )  # fmt: skip
            kept.append(built)
        except (EnvironmentSpecError, EnvironmentBuildError) as error:
            print(f"error: {error}", file=sys.stderr)
            failed += 1
            continue
        print(f"{built.name}: {built.tarball} python {built.python_version} "
              f"{', '.join(f'{k}=={v}' for k, v in built.packages.items())}")  # fmt: skip
        if args.unpack:
            folder = unpack_environment(built.tarball, args.unpack / built.tarball.name.removesuffix(".tar.gz"))
            print(f"  unpacked at {folder}")
    if args.prune and not failed:
        for removed in prune_cache(args.cache_dir.resolve(), kept):
            print(f"pruned {removed.name}")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m generator.environments.build {channel,build}` (same as `tritongen envs ...`)."""
    parser = argparse.ArgumentParser(prog="python -m generator.environments.build")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_envs_subcommands(subparsers)
    args = parser.parse_args(["envs", *(argv if argv is not None else sys.argv[1:])])
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "BuiltEnvironment",
    "EnvironmentBuildError",
    "EnvironmentSpec",
    "EnvironmentSpecError",
    "STUB_TARGETS",
    "add_envs_subcommands",
    "build_environment",
    "check_environment_spec",
    "default_channels",
    "parse_environment_spec",
    "recorded_channels",
    "remember_channels",
    "unpack_environment",
]
