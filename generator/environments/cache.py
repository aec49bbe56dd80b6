"""Building a per-version execution environment (EXECUTION_ENV_PATH) into the content-addressed
build cache, or reusing the build already there.

Building one (`build_environment`):
1. parse the spec and check it against the target's stub (Python minor version, `numpy<2`);
2. solve the conda part with py-rattler from the configured channels (default `conda-forge`,
   or the offline channel of `generator.environments.channel`), and install it into
   `<cache>/<hash>/`;
3. install the pip part with the environment's own pip, `--no-deps`, `backends/` packages
   built from their folder;
4. add an activation hook that clears PYTHONPATH/PYTHONHOME (the 2.51 stub embeds Python
   with an isolated config and ignores them, but any Python run after `bin/activate` would
   let the server's PYTHONPATH shadow the environment's packages), remove pip, tests and
   caches;
5. pack it with conda-pack into `<cache>/<name>-<hash>.tar.gz`.

The hash covers everything that goes in: the spec text, the solved conda packages (name,
version, build), the sources of the `backends/` packages it installs, the platform, the
server stub's Python and the recipe version; not machine-specific paths or channel URLs, so a fresh
clone computes the same names. An unchanged environment is never rebuilt; a changed one gets a new file
name, so that a reloading Triton extracts it afresh (docs/facts.md, "Execution environments").
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from generator import PROJECT_ROOT
from generator.environments import channel as conda_channel
from generator.environments.envspec import (
    BACKENDS_DIR,
    EnvironmentSpec,
    LocalPackage,
    check_spec_for_stub,
    local_packages,
    parse_environment_spec,
)
from generator.environments.errors import EnvironmentBuildError
from generator.environments.install import (
    ISOLATION_SCRIPT,
    Progress,
    clean_child_environment,
    install_conda,
    installed_packages,
    pip_install,
    remove_pip,
    run_step,
    slim,
    write_isolation_hook,
)
from generator.environments.pack import pack_prefix
from generator.environments.solve import solve_environment
from generator.environments.stubs import resolve_stub, shipped_stub_libraries

DEFAULT_CACHE_DIR = PROJECT_ROOT / "build" / "envs"
RECIPE_VERSION = "1"
"""Bump when the build recipe (slimming, hook, pip flags) changes: every hash changes."""
HASH_LENGTH = 16


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


def content_hash(
    spec: EnvironmentSpec,
    records: Sequence[Any],
    packages: Sequence[LocalPackage],
    stub_python: str,
    extra_files: Sequence[Path] = (),
) -> str:
    """Hash of everything that goes into an environment (`stub_python`: the server stub's Python)."""
    payload = {
        "recipe": [RECIPE_VERSION, ISOLATION_SCRIPT],
        "spec": spec.text,
        "platform": conda_channel.PLATFORM,
        "python": [spec.python, stub_python],
        "extra": {f.name: conda_channel.file_sha256(f) for f in extra_files},
        # name, version, build and subdir identify a conda package (artifacts in a channel are
        # immutable). Not its sha256: the offline channel is rebuilt on every machine (CI's
        # fresh clone), and the hash must not change with it, nor with the channel's URL.
        "conda": sorted(f"{r.subdir}/{r.name.normalized}={r.version}={r.build}" for r in records),
        "local": {p.name: [p.version, p.source_digest()] for p in packages},
    }
    encoded = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(encoded).hexdigest()[:HASH_LENGTH]


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


def _record_path(cache_dir: Path, name: str, digest: str) -> Path:
    """The build record (`<name>-<hash>.json`: Python version, packages, build time) of a tarball."""
    return cache_dir / f"{name}-{digest}.json"


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
    stub = resolve_stub(target_python)
    check_spec_for_stub(spec, stub, backends_dir, ship_stub)
    stub_libraries = shipped_stub_libraries() if spec.python != stub.python else []
    available = local_packages(backends_dir)
    used_local = [available[r.normalized] for r in spec.pip if r.normalized in available]
    progress(f"[{spec.name}] solving {', '.join(spec.conda)} from {', '.join(channels)}")
    records = solve_environment(spec, channels)
    digest = content_hash(spec, records, used_local, stub.python, stub_libraries)
    cache_dir = cache_dir.resolve()
    tarball = cache_dir / f"{spec.name}-{digest}.tar.gz"
    record = _record_path(cache_dir, spec.name, digest)
    prefix = cache_dir / digest
    with _locked(cache_dir / f".{spec.name}-{digest}.lock"):
        if tarball.is_file() and record.is_file():
            data = json.loads(record.read_text())
            progress(f"[{spec.name}] unchanged ({digest}): {tarball.name}")
            return BuiltEnvironment(
                spec.name, digest, tarball, data["python_version"], data["packages"],
                cached=True, build_seconds=data.get("build_seconds", 0.0),
                prefix=prefix if prefix.is_dir() else None,
            )  # fmt: skip
        shutil.rmtree(prefix, ignore_errors=True)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        progress(f"[{spec.name}] installing {len(records)} conda packages into {prefix}")
        install_conda(records, prefix, cache_dir / "pkgs")
        python = prefix / "bin" / "python3"
        if not python.exists():
            raise EnvironmentBuildError(f"environment {spec.name!r}: no bin/python3 after install")
        env = clean_child_environment()
        if spec.pip:
            pip_install(spec, available, python, env, progress)
        for library in stub_libraries:
            progress(f"[{spec.name}] adding {library.name} for the shipped Python {spec.python} stub")
            shutil.copy2(library, prefix / "lib" / library.name)
        write_isolation_hook(prefix)
        if not keep_pip and any(r.name.normalized == "pip" for r in records):
            progress(f"[{spec.name}] removing pip from the environment")
            remove_pip(records, prefix, spec.python, cache_dir / "pkgs")
        slim(prefix, spec.python)
        version = run_step(
            "python --version", spec.name,
            [str(python), "-c", "import platform; print(platform.python_version())"], env=env,
        ).strip()  # fmt: skip
        packages = installed_packages(prefix, spec.python)
        progress(f"[{spec.name}] packing with conda-pack -> {tarball.name}")
        pack_prefix(prefix, tarball, spec.name)
        if not keep_prefix:
            shutil.rmtree(prefix, ignore_errors=True)
        seconds = time.monotonic() - started
        record.write_text(
            json.dumps(
                {"name": spec.name, "content_hash": digest, "python_version": version,
                 "packages": packages, "build_seconds": round(seconds, 1),
                 "tarball": tarball.name, "target": stub.name},
                indent=2,
            )
        )  # fmt: skip
        size = tarball.stat().st_size / 1e6
        progress(f"[{spec.name}] built in {seconds:.0f}s: {tarball.name} ({size:.1f} MB)")
        return BuiltEnvironment(
            spec.name, digest, tarball, version, packages, cached=False,
            build_seconds=seconds, prefix=prefix if keep_prefix else None,
        )  # fmt: skip


def prune_cache(cache_dir: Path, keep: Sequence[BuiltEnvironment]) -> list[Path]:
    """Delete cached tarballs, build records and prefixes of environments not in `keep`."""
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
