"""Packing a built prefix with conda-pack, and unpacking a packed environment into a folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
from pathlib import Path

from generator.environments.errors import EnvironmentBuildError


def pack_prefix(prefix: Path, tarball: Path, env_name: str) -> None:
    """Pack `prefix` into `tarball` with conda-pack (written aside, then moved into place)."""
    import conda_pack

    partial = tarball.with_name(f"{tarball.name}.{os.getpid()}.partial")  # per process: builds may run side by side
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
    Processes unpacking the same tarball side by side (two test sessions, a generate and a
    benchmark) each extract into their own partial folder; the folder appears whole.
    """
    partial = destination.with_name(f"{destination.name}.{os.getpid()}.partial")  # per process, as above
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            archive.extractall(partial, filter="tar")
        if destination.exists():  # moved aside first: another process may be doing the same
            old = destination.with_name(f"{destination.name}.{os.getpid()}.old")
            with contextlib.suppress(FileNotFoundError):
                destination.replace(old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            partial.replace(destination)
        except OSError:
            if not destination.is_dir():
                raise  # else another process unpacked the same tarball there just now
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return destination
