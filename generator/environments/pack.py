"""Packing a built prefix with conda-pack, and unpacking a packed environment into a folder."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

from generator.environments.errors import EnvironmentBuildError


def pack_prefix(prefix: Path, tarball: Path, env_name: str) -> None:
    """Pack `prefix` into `tarball` with conda-pack (written aside, then moved into place)."""
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
