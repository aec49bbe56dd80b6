"""Installing an environment into its build prefix: the solved conda packages (py-rattler), the
pip section (the environment's own pip, `--no-deps`; `backends/` packages built from source),
the activation hook that isolates it, and the slimming of what serving never needs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from generator.environments import channel as conda_channel
from generator.environments.envspec import EnvironmentSpec, LocalPackage, normalize_name
from generator.environments.errors import EnvironmentBuildError

Progress = Callable[[str], None]

ISOLATION_HOOK = "etc/conda/activate.d/tritongen-isolate.sh"
"""The activation hook, relative to the prefix."""
ISOLATION_SCRIPT = """\
# Written by tritongen: only this environment decides what its Python imports.
# The python backend starts the stub as `source bin/activate && exec env LD_LIBRARY_PATH=...
# stub`, inheriting the server's environment. The 2.51 stub embeds Python with an isolated
# config (it ignores PYTHONPATH and finds this prefix through `python3` on PATH); any other
# Python run after activation would let the server's PYTHONPATH shadow the packages here.
unset PYTHONPATH PYTHONHOME PYTHONSTARTUP PYTHONUSERBASE PYTHONSAFEPATH
export PYTHONNOUSERSITE=1
"""


def clean_child_environment() -> dict[str, str]:
    """This process's environment variables without Python, virtualenv and conda settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "CONDA"))}
    env["PYTHONNOUSERSITE"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def run_step(step: str, env_name: str, command: Sequence[str], **kwargs: Any) -> str:
    """Run one build command; its stdout, or `EnvironmentBuildError` with the output's tail."""
    result = subprocess.run(list(command), capture_output=True, text=True, check=False, **kwargs)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-25:])
        raise EnvironmentBuildError(
            f"environment {env_name!r}: {step} failed (exit {result.returncode}):\n$ {' '.join(command)}\n{tail}"
        )
    return result.stdout


def install_conda(records: list[Any], prefix: Path, package_cache: Path) -> None:
    """Install the solved conda packages into `prefix`."""
    from rattler import install

    conda_channel.run_rattler(install(records, target_prefix=prefix, cache_dir=package_cache, show_progress=False))


def pip_install(
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
        run_step(
            "pip install", spec.name,
            [str(python), "-m", "pip", "install", "--no-deps", "--no-compile",
             "--no-cache-dir", "--no-warn-script-location", *lines],
            env=dict(env),
        )  # fmt: skip


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
            run_step(f"building {package.name}", env_name, [*base, "--no-build-isolation", str(source)])
        except EnvironmentBuildError:
            run_step(f"building {package.name}", env_name, [*base, str(source)])
    wanted = normalize_name(package.name).replace("-", "_")
    wheels = [
        w for w in wheel_dir.glob("*.whl")
        if normalize_name(w.name.split("-")[0]).replace("-", "_") == wanted
        and w.name.split("-")[1] == package.version
    ]  # fmt: skip
    if not wheels:
        raise EnvironmentBuildError(f"environment {env_name!r}: no wheel of {package.name} built")
    return max(wheels, key=lambda w: w.stat().st_mtime)


def write_isolation_hook(prefix: Path) -> None:
    """Add the activation hook that clears PYTHONPATH/PYTHONHOME (see `ISOLATION_SCRIPT`)."""
    hook = prefix / ISOLATION_HOOK
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text(ISOLATION_SCRIPT)


def remove_pip(records: list[Any], prefix: Path, python_minor: str, package_cache: Path) -> None:
    """Uninstall the conda package pip, and the caches pip wrote while running."""
    _remove_conda_packages(records, prefix, {"pip"}, package_cache)
    site = prefix / "lib" / f"python{python_minor}" / "site-packages"
    for leftover in [site / "pip", *site.glob("pip-*.dist-info")]:
        shutil.rmtree(leftover, ignore_errors=True)


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


def slim(prefix: Path, python_minor: str) -> None:
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


def installed_packages(prefix: Path, python_minor: str) -> dict[str, str]:
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
