"""Unpacking a packed environment: whole or not at all, also when processes unpack side by side."""

from __future__ import annotations

import io
import multiprocessing
import tarfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from generator.environments.pack import unpack_environment


def _tarball(path: Path, files: int = 200) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for index in range(files):
            data = f"file {index}\n".encode() * 100
            info = tarfile.TarInfo(f"lib/python3.10/site-packages/pkg/module_{index}.py")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_processes_unpacking_the_same_environment_side_by_side_all_succeed(tmp_path: Path) -> None:
    tarball = _tarball(tmp_path / "env.tar.gz")
    destination = tmp_path / "envs" / "textprep.unpacked"
    # Spawned, not forked: a fork of this multi-threaded test process (torch, rattler) can hang.
    with ProcessPoolExecutor(max_workers=4, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(unpack_environment, [tarball] * 4, [destination] * 4))
    assert results == [destination] * 4
    assert len(list((destination / "lib/python3.10/site-packages/pkg").iterdir())) == 200
    assert sorted(p.name for p in destination.parent.iterdir()) == ["textprep.unpacked"]  # no partial left


def test_a_failed_unpack_leaves_nothing(tmp_path: Path) -> None:
    broken = tmp_path / "env.tar.gz"
    broken.write_bytes(b"not a tarball")
    destination = tmp_path / "envs" / "textprep.unpacked"
    destination.parent.mkdir()
    try:
        unpack_environment(broken, destination)
    except tarfile.TarError:
        pass
    else:
        raise AssertionError("a broken tarball was unpacked")
    assert list(destination.parent.iterdir()) == []
