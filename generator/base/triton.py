"""The embedded tritonserver's install and its backend folder.

The `nvidia-pytriton` wheel bundles a real tritonserver 2.51 with only the python backend.
Its own backend folder lacks a stub, so `assemble_backend_directory` builds one: `python/` with
a *copy* of `libtriton_python.so` (the server refuses a symlinked backend library), a *symlink*
to the stub of the server's Python (the stub's RPATH is relative to its original location, so
a copy only works at the same folder depth relative to `nvidia_pytriton.libs`) and
`triton_python_backend_utils.py`; next to it, every Python-based backend of the project's
`backends/triton/` folder (`<name>/model.py`), each with a copy of the modules the runners
share (`backends/triton/*.py`, e.g. the batching core).

This one function is shared by `tritongen serve`, the integration tests and the container
image build, so that all three serve the repository with the same backend folder. The image
build runs this module alone (`python -m generator.base.triton assemble DEST`) with only the
standard library and pytriton: it imports nothing else of the project but `generator` and
`generator.errors`.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from generator import PROJECT_ROOT
from generator.errors import TritongenError

PYTHON_BACKENDS_DIR = PROJECT_ROOT / "backends" / "triton"
"""The project's Python-based backends (`<name>/model.py`) and the modules they share."""
PREPROCESSING_PACKAGES = (PROJECT_ROOT / "backends" / "textprep",)
"""Source folders of the preprocessing packages, importable by stubs without an environment."""
STUB_PYTHON = "3.11"
"""Python minor version of the stub the embedded server uses (the project's Python)."""


class TritonServerError(TritongenError, RuntimeError):
    """The embedded server could not be found, assembled, started, or did not become ready."""


@dataclass(frozen=True)
class TritonInstall:
    """Where the pieces of the embedded tritonserver live."""

    root: Path
    """`<site-packages>/pytriton/tritonserver`."""

    @property
    def server_binary(self) -> Path:
        return self.root / "bin" / "tritonserver"

    @property
    def python_backend_library(self) -> Path:
        return self.root / "backends" / "python" / "libtriton_python.so"

    @property
    def python_backend_utils(self) -> Path:
        return self.root / "backends" / "python" / "triton_python_backend_utils.py"

    def stub(self, python_minor: str = STUB_PYTHON) -> Path:
        return self.root / "python_backend_stubs" / python_minor / "triton_python_backend_stub"

    @property
    def libs_dir(self) -> Path:
        """The wheel's bundled shared libraries (`nvidia_pytriton.libs`)."""
        return self.root.parent.parent / "nvidia_pytriton.libs"


def find_triton() -> TritonInstall:
    """Locate the tritonserver bundled with the installed `nvidia-pytriton` wheel."""
    try:
        import pytriton  # type: ignore[import-untyped]
    except ImportError as error:
        raise TritonServerError(
            "the embedded tritonserver needs the `nvidia-pytriton==0.7.0` wheel: pip install -e ."
        ) from error
    root = Path(pytriton.__file__).resolve().parent / "tritonserver"
    install = TritonInstall(root)
    for needed in (install.server_binary, install.python_backend_library, install.stub()):
        if not needed.exists():
            raise TritonServerError(f"incomplete nvidia-pytriton install: {needed} is missing")
    return install


def assemble_backend_directory(
    destination: Path,
    install: TritonInstall | None = None,
    python_backends: Path = PYTHON_BACKENDS_DIR,
    copy_stub: bool = False,
    backends: Sequence[str] | None = None,
    stub: Path | None = None,
) -> Path:
    """Create a `--backend-directory` for the embedded server at `destination`.

    `copy_stub=True` copies the stub instead of linking it; the copy then only works when
    placed at the same folder depth relative to `nvidia_pytriton.libs` (container images
    that install the wheel at the same layout do not need this). `backends` names the
    Python-based backends to include (default: every `<python_backends>/<name>/model.py`);
    `stub` is a file installed as `python/triton_python_backend_stub` instead of the server's
    stub (the container image's stub dispatcher).
    """
    install = install or find_triton()
    python_dir = destination / "python"
    if destination.exists():
        shutil.rmtree(destination)
    python_dir.mkdir(parents=True)
    shutil.copy2(install.python_backend_library, python_dir / "libtriton_python.so")
    if install.python_backend_utils.exists():
        shutil.copy2(install.python_backend_utils, python_dir / "triton_python_backend_utils.py")
    stub_target = python_dir / "triton_python_backend_stub"
    if stub is not None:
        shutil.copyfile(stub, stub_target)
        stub_target.chmod(0o755)
    elif copy_stub:
        shutil.copy2(install.stub(), stub_target)
    else:
        stub_target.symlink_to(install.stub())
    shared_modules = sorted(python_backends.glob("*.py"))
    if backends is not None:
        missing = [name for name in backends if not (python_backends / name / "model.py").is_file()]
        if missing:
            raise TritonServerError(f"no Python-based backend {missing} in {python_backends}")
    for backend in sorted(python_backends.iterdir()):
        if (backend / "model.py").is_file() and (backends is None or backend.name in backends):
            shutil.copytree(backend, destination / backend.name, ignore=_ignore_caches)
            # Modules shared by the runners (tritongen_batching.py): a Python-based backend's
            # folder is on its stub's sys.path, so each runner gets its own copy.
            for module in shared_modules:
                shutil.copy2(module, destination / backend.name / module.name)
    return destination


def _ignore_caches(_folder: str, names: list[str]) -> list[str]:
    return [name for name in names if name == "__pycache__"]


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m generator.base.triton assemble DEST`: build a backend folder (image builds)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m generator.base.triton")
    parser.add_argument("action", choices=["assemble"])
    parser.add_argument("destination", type=Path)
    parser.add_argument("--copy-stub", action="store_true", help="copy the stub, don't link it")
    parser.add_argument("--backend", action="append", help="include only these Python-based backends")
    parser.add_argument("--stub", type=Path, help="a file to install as python/triton_python_backend_stub")
    args = parser.parse_args(argv)
    assemble_backend_directory(args.destination, copy_stub=args.copy_stub, backends=args.backend, stub=args.stub)
    print(f"backend folder assembled at {args.destination}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
