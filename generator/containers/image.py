"""tritongen's stand-in of NVIDIA's `nvcr.io/nvidia/tritonserver:24.10-py3`, built locally.

NVIDIA's image cannot be pulled here and its native onnxruntime/pytorch backends cannot be
installed, so this image mirrors it where it matters to a repository (docs/ngc-standin.md lists
every deviation and why none can hide a failure on NVIDIA's image):

- `/opt/tritonserver/bin/tritonserver`: tritonserver 2.51 (r24.10) from the nvidia-pytriton wheel;
- `/opt/tritonserver/backends/` holds exactly `python`, `onnxruntime` and `pytorch`;
- `python/` is the python backend with a stub dispatcher as `triton_python_backend_stub`: every
  model without its own stub gets the Python 3.10 stub (NGC 24.10's system Python is 3.10), only
  the stand-ins of NVIDIA's native backends (`onnxruntime/model.py`, `pytorch/model.py`, this
  project's Python runners) get the Python 3.11 stub and the runners' private Python prefix;
- `python3` is CPython 3.10 with numpy<2 and nothing else; there is no Python 3.11 (and no
  libpython3.11) outside the runners' prefix, so a model that ships a 3.11 stub needs its own
  3.11 execution environment, as on NVIDIA's image (and a writable model folder: the python
  backend chmods a model's own stub at load).

Nothing is pulled. The base is a `debootstrap --variant=minbase` rootfs (its Debian python3.11
only runs pip during the build and is purged) imported into Docker and tagged
`tritongen-base:bookworm-<hash>`. Both Pythons are the relocatable CPython prefixes
`generator.environments.channel.build_python_package` makes from the pyenv CPythons (the ones
the conda channel ships). The wheels (locked) are downloaded on the host. The backend folder is
assembled by running `generator.base.triton assemble` (the function `tritongen serve`
uses) from the modules listed in `IMAGE_MODULES`, which import only the standard library, each
other and `pytriton` (tests/generator/containers/test_image.py enforces this).

The image tag is a content hash of every input (templates, locked packages, base, Python
sources, runners, `IMAGE_MODULES`); an image that exists is not rebuilt. It is also tagged
`tritongen-triton:latest`, the name the deploy files of the `local` target use.

CLI: `python -m generator.containers.image build [--force]`, `tag`, `dockerfile`, `lock`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import string
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from generator import PROJECT_ROOT
from generator.base.triton import PYTHON_BACKENDS_DIR
from generator.environments import channel
from generator.kinds.formats import FORMATS
from generator.kinds.targets import LOCAL, PRODUCTION
from generator.kinds.targets.local import IMAGE_REPOSITORY
from generator.pipeline.deploy.launcher import container_command
from generator.sources import source_files

if TYPE_CHECKING:
    import docker

DATA_DIR = Path(__file__).resolve().parent / "image_data"
DOCKERFILE_TEMPLATE = DATA_DIR / "Dockerfile.in"
REQUIREMENTS_IN = DATA_DIR / "requirements.in"
REQUIREMENTS_NODEPS_IN = DATA_DIR / "requirements-nodeps.in"
REQUIREMENTS_LOCK = DATA_DIR / "requirements.lock"
STUB_DISPATCHER_TEMPLATE = DATA_DIR / "triton_python_backend_stub.in"
IMAGE_MODULES = (
    "generator/__init__.py",
    "generator/errors.py",
    "generator/base/__init__.py",
    "generator/base/triton.py",
)
"""The project modules copied into the image build, which runs `python -m
generator.base.triton assemble` with the runners' Python. They may import only the
standard library, each other and `IMAGE_THIRD_PARTY_IMPORTS` (a unit test checks it)."""
IMAGE_THIRD_PARTY_IMPORTS = ("pytriton",)
"""Installed packages `IMAGE_MODULES` may import (they are in requirements.lock)."""
BUILD_DIR = PROJECT_ROOT / "build" / "image"

SYSTEM_PYTHON = PRODUCTION.server_stub_python
"""NGC 24.10's system Python (Ubuntu 22.04): the python backend's default stub."""
SYSTEM_PYTHON_REQUIREMENTS = ("numpy==1.26.4",)
"""What the system Python has besides its standard library (the python backend needs numpy<2)."""
RUNNER_PYTHON = "3.11"
"""The Python of the runners (the torch 2.13 CPU wheel exists for 3.11 only)."""
RUNNER_BACKENDS = tuple(sorted({inference_format.backend for inference_format in FORMATS.values()}))
"""Stand-ins of NVIDIA's native backends: this project's Python runners under NVIDIA's names
(one for each backend an inference format is served by)."""
NVIDIA_BACKENDS = ("python", *RUNNER_BACKENDS)
"""Exactly the folders of the image's `/opt/tritonserver/backends`."""

LATEST_TAG = LOCAL.image
"""The name the `local` target's `docker-run.sh` and `docker-compose.yml` run."""
BASE_REPOSITORY = "tritongen-base"

RECIPE_VERSION = "1"
"""Bump when the build steps change in a way the hashed inputs do not show."""

SYSTEM_PREFIX = Path(f"/opt/python{SYSTEM_PYTHON}")
"""The system Python's prefix in the image (`/usr/local/bin/python3` links to it)."""
RUNNER_PREFIX = Path(f"/opt/tritongen/python{RUNNER_PYTHON}")
"""The runners' private Python prefix (with tritonserver, numpy, onnxruntime, torch)."""
IMAGE_SITE_PACKAGES = RUNNER_PREFIX / "lib" / f"python{RUNNER_PYTHON}" / "site-packages"
IMAGE_PYTRITON_ROOT = IMAGE_SITE_PACKAGES / "pytriton" / "tritonserver"

Log = Callable[[str], None]


class ImageBuildError(RuntimeError):
    """The base or the image could not be built (the message carries the log tail)."""


@dataclass(frozen=True)
class BaseSpec:
    """What the debootstrap base contains; its hash names the base image."""

    suite: str = "bookworm"
    variant: str = "minbase"
    packages: tuple[str, ...] = ("python3.11", "python3-pip")
    """Debian's Python, only to run pip during the build (purged from the final image)."""

    def digest(self) -> str:
        text = json.dumps(
            {"suite": self.suite, "variant": self.variant, "packages": sorted(self.packages)},
            sort_keys=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def tag(self) -> str:
        return f"{BASE_REPOSITORY}:{self.suite}-{self.digest()}"


def debian_mirror(sources_dirs: Iterable[Path] = (Path("/etc/apt"),)) -> str:
    """The Debian mirror apt is configured with (deb822 `.sources` or one-line lists)."""
    for apt_dir in sources_dirs:
        files = sorted((apt_dir / "sources.list.d").glob("*.sources"))
        for path in files:
            for stanza in re.split(r"\n\s*\n", path.read_text()):
                fields = dict(
                    (key.strip(), value.strip())
                    for key, value in (
                        line.split(":", 1)
                        for line in stanza.splitlines()
                        if ":" in line and not line.lstrip().startswith("#")
                    )
                )
                for uri in fields.get("URIs", "").split():
                    if not uri.rstrip("/").endswith("-security"):
                        return uri
        lists = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
        for path in lists:
            if path.exists():
                for line in path.read_text().splitlines():
                    match = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+\S+", line)
                    if match and not match.group(1).rstrip("/").endswith("-security"):
                        return match.group(1)
    return "http://deb.debian.org/debian"


def python_sources() -> dict[str, Path]:
    """The pyenv CPython prefixes the image's Pythons are made from, by minor version."""
    return {minor: channel.find_cpython_prefix(minor) for minor in (SYSTEM_PYTHON, RUNNER_PYTHON)}


def inputs_hash(base: BaseSpec | None = None, python_backends: Path = PYTHON_BACKENDS_DIR) -> str:
    """Content hash of every input of the image."""
    base = base or BaseSpec()
    digest = hashlib.sha256()

    def add(name: str, data: bytes) -> None:
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)

    add("recipe", RECIPE_VERSION.encode())
    add("base", base.tag.encode())
    add("Dockerfile.in", DOCKERFILE_TEMPLATE.read_bytes())
    add("requirements.lock", REQUIREMENTS_LOCK.read_bytes())
    add("system requirements", "\n".join(SYSTEM_PYTHON_REQUIREMENTS).encode())
    add("stub dispatcher", STUB_DISPATCHER_TEMPLATE.read_bytes())
    add("python package recipe", Path(channel.__file__).read_bytes())
    for minor, prefix in sorted(python_sources().items()):
        add(f"python {minor}", prefix.name.encode())
    for module in IMAGE_MODULES:
        add(module, (PROJECT_ROOT / module).read_bytes())
    for path in source_files(python_backends):
        add(f"backends/{path.relative_to(python_backends).as_posix()}", path.read_bytes())
    return digest.hexdigest()[:16]


def image_tag(base: BaseSpec | None = None, python_backends: Path = PYTHON_BACKENDS_DIR) -> str:
    """`tritongen-triton:<inputs hash>`."""
    return f"{IMAGE_REPOSITORY}:{inputs_hash(base, python_backends)}"


def render_dockerfile(base: BaseSpec, digest: str) -> str:
    """The Dockerfile for `base`; `digest` is recorded as a label."""
    pins = _lock_pins()
    major, minor = SYSTEM_PYTHON.split(".")
    assemble = [*(f"--backend={name}" for name in RUNNER_BACKENDS), f"--stub={STUB_DISPATCHER_NAME}"]
    return string.Template(DOCKERFILE_TEMPLATE.read_text()).substitute(
        base_image=base.tag,
        triton_root=str(IMAGE_PYTRITON_ROOT),
        pytriton_version=pins.get("nvidia-pytriton", "?"),
        inputs_hash=digest,
        command=json.dumps(container_command(target=LOCAL)),
        system_python=SYSTEM_PYTHON,
        system_major=major,
        system_minor=minor,
        system_prefix=str(SYSTEM_PREFIX),
        system_site=str(SYSTEM_PREFIX / "lib" / f"python{SYSTEM_PYTHON}" / "site-packages"),
        system_build_prefix=str(python_sources()[SYSTEM_PYTHON]),
        runner_python=RUNNER_PYTHON,
        runner_prefix=str(RUNNER_PREFIX),
        runner_site=str(IMAGE_SITE_PACKAGES),
        assemble_options=" ".join(assemble),
        backend_listing="".join(f"{name} " for name in sorted(NVIDIA_BACKENDS)),
    )


STUB_DISPATCHER_NAME = "triton_python_backend_stub"
"""The dispatcher's name in the build context's `src/` (copied into `python/` by assemble)."""


def render_stub_dispatcher(
    default_stub: Path = IMAGE_PYTRITON_ROOT / "python_backend_stubs" / SYSTEM_PYTHON / "triton_python_backend_stub",
    runner_stub: Path = IMAGE_PYTRITON_ROOT / "python_backend_stubs" / RUNNER_PYTHON / "triton_python_backend_stub",
    runner_prefix: Path = RUNNER_PREFIX,
) -> str:
    """The image's `python/triton_python_backend_stub`: it execs `default_stub` (Python 3.10),
    or `runner_stub` (Python 3.11, `runner_prefix` on PATH) for the RUNNER_BACKENDS."""
    values = {
        "RUNNER_BACKENDS": " ".join(RUNNER_BACKENDS),
        "RUNNER_PYTHON": RUNNER_PYTHON,
        "RUNNER_PREFIX": str(runner_prefix),
        "RUNNER_STUB": str(runner_stub),
        "DEFAULT_STUB": str(default_stub),
    }
    text = STUB_DISPATCHER_TEMPLATE.read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    leftover = re.findall(r"@[A-Z_]+@", text)
    if leftover:
        raise ImageBuildError(f"{STUB_DISPATCHER_TEMPLATE.name}: no value for {sorted(set(leftover))}")
    return text


def _lock_pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in REQUIREMENTS_LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[_normalize(name)] = version.strip()
    return pins


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_lines(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def lock_requirements(log: Log = print) -> Path:
    """Resolve `requirements.in` (+ the no-deps ones) into `requirements.lock` with pip."""
    report = BUILD_DIR / "pip-report.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--ignore-installed",
        "--quiet",
        "--only-binary=:all:",
        "--report",
        str(report),
        *_requirement_lines(REQUIREMENTS_IN),
    ]
    log(f"resolving {REQUIREMENTS_IN.name} with pip")
    subprocess.run(command, check=True)
    resolved = json.loads(report.read_text())["install"]
    pins = {_normalize(item["metadata"]["name"]): item["metadata"]["version"] for item in resolved}
    for line in _requirement_lines(REQUIREMENTS_NODEPS_IN):
        name, version = line.split("==", 1)
        pins[_normalize(name)] = version
    text = (
        "# Generated by `python -m generator.containers.image lock` from requirements.in and\n"
        "# requirements-nodeps.in; installed with --no-deps in the image.\n"
        + "".join(f"{name}=={pins[name]}\n" for name in sorted(pins))
    )
    REQUIREMENTS_LOCK.write_text(text)
    log(f"wrote {REQUIREMENTS_LOCK} ({len(pins)} packages)")
    return REQUIREMENTS_LOCK


def _client(host: str | None) -> docker.DockerClient:
    import docker

    return docker.DockerClient(base_url=host) if host else docker.from_env()


def _image_exists(client: docker.DockerClient, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def ensure_base_image(client: docker.DockerClient, base: BaseSpec | None = None, log: Log = print) -> str:
    """Import the debootstrap rootfs of `base` unless its tag exists; return the tag."""
    base = base or BaseSpec()
    if _image_exists(client, base.tag):
        log(f"base image {base.tag} exists")
        return base.tag
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not Path(debootstrap).exists():
        raise ImageBuildError("debootstrap is not installed (run tests/setup_system.sh)")
    mirror = debian_mirror()
    rootfs = BUILD_DIR / f"rootfs-{base.digest()}"
    log_path = BUILD_DIR / "debootstrap.log"
    shutil.rmtree(rootfs, ignore_errors=True)
    rootfs.mkdir(parents=True)
    command = [
        debootstrap,
        f"--variant={base.variant}",
        f"--include={','.join(base.packages)}",
        base.suite,
        str(rootfs),
        mirror,
    ]
    log(f"debootstrap {base.suite} ({base.variant}, {', '.join(base.packages)}) from {mirror}")
    started = time.monotonic()
    with log_path.open("wb") as handle:
        result = subprocess.run(
            command,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    if result.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise ImageBuildError(f"debootstrap failed ({result.returncode}):\n{tail}")
    log(f"debootstrap done in {time.monotonic() - started:.0f}s")
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (rootfs / leftover).glob("*"):
            if path.is_file() and path.name != "lock":
                path.unlink()
    tarball = BUILD_DIR / f"rootfs-{base.digest()}.tar"
    subprocess.run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
    shutil.rmtree(rootfs)
    repository, tag = base.tag.split(":", 1)
    log(f"importing {tarball.name} as {base.tag}")
    client.api.import_image_from_file(str(tarball), repository=repository, tag=tag)
    tarball.unlink()
    if not _image_exists(client, base.tag):
        raise ImageBuildError(f"docker import did not create {base.tag}")
    return base.tag


def _pip_download(arguments: Sequence[str], wheelhouse: Path, log: Log) -> None:
    wheelhouse.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    result = subprocess.run([*command, "--dest", str(wheelhouse), *arguments], capture_output=True, text=True)
    noise = re.compile(r"WARNING: Location '.*' is ignored")
    for line in (result.stdout + result.stderr).splitlines():
        if line.strip() and not noise.match(line):
            log(line)
    if result.returncode != 0:
        raise ImageBuildError(f"pip download failed ({result.returncode})")


def _keep_pinned(wheelhouse: Path, pins: dict[str, str]) -> None:
    for wheel in wheelhouse.glob("*.whl"):
        name, version = wheel.name.split("-")[:2]
        if pins.get(_normalize(name)) != version.replace("%2B", "+"):
            wheel.unlink()  # a stale pin


def download_wheels(wheelhouse: Path, log: Log = print) -> None:
    """Download the locked wheels of the runners' Python (no dependencies) into `wheelhouse`."""
    log(f"downloading locked wheels into {wheelhouse}")
    _pip_download(["--python-version", RUNNER_PYTHON, "-r", str(REQUIREMENTS_LOCK)], wheelhouse, log)
    _keep_pinned(wheelhouse, _lock_pins())
    shutil.copy2(REQUIREMENTS_LOCK, wheelhouse / "requirements.lock")


def download_system_wheels(wheelhouse: Path, log: Log = print) -> None:
    """Download `SYSTEM_PYTHON_REQUIREMENTS` for the system Python into `wheelhouse`."""
    log(f"downloading the system Python's wheels into {wheelhouse}")
    platform_flags = ["--python-version", SYSTEM_PYTHON, "--platform", "manylinux2014_x86_64", "--implementation", "cp"]
    _pip_download([*platform_flags, *SYSTEM_PYTHON_REQUIREMENTS], wheelhouse, log)
    pins = dict(requirement.split("==", 1) for requirement in SYSTEM_PYTHON_REQUIREMENTS)
    _keep_pinned(wheelhouse, {_normalize(name): version for name, version in pins.items()})
    (wheelhouse / "requirements.txt").write_text("".join(f"{r}\n" for r in SYSTEM_PYTHON_REQUIREMENTS))


def unpack_python_package(package: Path, destination: Path, prefix: Path) -> Path:
    """Extract a `python` `.conda` package (channel.build_python_package) into `destination`,
    a prefix that will live at `prefix`: its placeholder paths are rewritten as conda would."""
    import zstandard

    shutil.rmtree(destination, ignore_errors=True)
    destination.mkdir(parents=True)
    placeholders: list[tuple[str, str]] = []
    with zipfile.ZipFile(package) as archive:
        for member in archive.namelist():
            if not member.endswith(".tar.zst"):
                continue
            data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(archive.read(member)))
            with tarfile.open(fileobj=data, mode="r|") as tar:
                if member.startswith("pkg-"):
                    tar.extractall(destination, filter="tar")
                    continue
                for entry in tar:
                    if entry.name == "info/has_prefix" and (handle := tar.extractfile(entry)):
                        for line in handle.read().decode().splitlines():
                            old, _mode, path = line.split(" ", 2)
                            placeholders.append((old, path))
    for old, path in placeholders:
        placed = destination / path
        placed.write_bytes(placed.read_bytes().replace(old.encode(), str(prefix).encode()))
    return destination


def _link_tree(source: Path, destination: Path) -> None:
    """`destination` as a copy of `source` made of hard links where possible."""
    shutil.rmtree(destination, ignore_errors=True)
    destination.mkdir(parents=True)
    for path in source.iterdir():
        if path.is_file():
            try:
                os.link(path, destination / path.name)
            except OSError:
                shutil.copy2(path, destination / path.name)


def prepare_context(
    context: Path,
    base: BaseSpec,
    digest: str,
    python_backends: Path = PYTHON_BACKENDS_DIR,
    log: Log = print,
) -> Path:
    """Lay out the build context: Dockerfile, wheels/, system-wheels/, pythons/, src/."""
    context.mkdir(parents=True, exist_ok=True)
    download_wheels(BUILD_DIR / "wheels", log)
    _link_tree(BUILD_DIR / "wheels", context / "wheels")
    download_system_wheels(BUILD_DIR / "system-wheels", log)
    _link_tree(BUILD_DIR / "system-wheels", context / "system-wheels")
    homes = {SYSTEM_PYTHON: SYSTEM_PREFIX, RUNNER_PYTHON: RUNNER_PREFIX}
    for minor in sorted(homes):
        built = channel.build_python_package(minor, BUILD_DIR / "python", progress=log)
        unpack_python_package(built.path, context / "pythons" / minor, homes[minor])
    src = context / "src"
    shutil.rmtree(src, ignore_errors=True)
    for module in IMAGE_MODULES:
        (src / module).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT_ROOT / module, src / module)
    _copy_sources(python_backends, src / "backends" / "triton")
    (src / STUB_DISPATCHER_NAME).write_text(render_stub_dispatcher())
    (context / "Dockerfile").write_text(render_dockerfile(base, digest))
    return context


def _copy_sources(source: Path, destination: Path) -> None:
    destination.mkdir(parents=True, exist_ok=True)
    for path in source_files(source):
        copied = destination / path.relative_to(source)
        copied.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, copied)


@contextlib.contextmanager
def _build_lock(digest: str) -> Iterator[None]:
    """One build of a tag at a time (test sessions and the CLI may build concurrently)."""
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    with (BUILD_DIR / f"build-{digest}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_image(
    docker_host: str | None = None,
    force: bool = False,
    base: BaseSpec | None = None,
    python_backends: Path = PYTHON_BACKENDS_DIR,
    log: Log = print,
) -> str:
    """Build the image unless its content-hash tag exists; return the tag.

    `docker_host` defaults to `$DOCKER_HOST` (or the default socket).
    """
    base = base or BaseSpec()
    digest = inputs_hash(base, python_backends)
    tag = f"{IMAGE_REPOSITORY}:{digest}"
    client = _client(docker_host)
    try:
        with _build_lock(digest):
            if not force and _image_exists(client, tag):
                log(f"image {tag} exists (inputs unchanged)")
                client.api.tag(tag, IMAGE_REPOSITORY, "latest")
                return tag
            started = time.monotonic()
            ensure_base_image(client, base, log)
            context = BUILD_DIR / f"context-{digest}"
            try:
                prepare_context(context, base, digest, python_backends, log)
                log(f"building {tag}")
                _stream_build(client, context, tag, log)
            finally:
                shutil.rmtree(context, ignore_errors=True)  # ~0.5 GB; `dockerfile` shows the recipe
            client.api.tag(tag, IMAGE_REPOSITORY, "latest")
            log(f"built {tag} in {time.monotonic() - started:.0f}s")
        remove_old_images(client, keep=(tag, LATEST_TAG, base.tag), log=log)
        return tag
    finally:
        client.close()


def remove_old_images(client: docker.DockerClient, keep: Sequence[str], log: Log = print) -> None:
    """Untag the project's images other than `keep` (superseded builds); skip ones in use."""
    import docker.errors

    for repository in (IMAGE_REPOSITORY, BASE_REPOSITORY):
        for image in client.images.list(name=repository):
            for old in image.tags:
                if old in keep:
                    continue
                try:
                    client.images.remove(old)
                    log(f"removed the superseded image {old}")
                except docker.errors.APIError as error:
                    log(f"kept {old}: {error.explanation or error}")


def _stream_build(client: docker.DockerClient, context: Path, tag: str, log: Log) -> None:
    chunks: Iterable[dict[str, Any]] = client.api.build(
        path=str(context),
        tag=tag,
        rm=True,
        forcerm=True,
        pull=False,
        network_mode="none",
        decode=True,
        labels={"tritongen.image": "triton"},
    )
    for chunk in chunks:
        if "error" in chunk:
            raise ImageBuildError(f"docker build of {tag} failed: {chunk['error']}")
        text = chunk.get("stream", "")
        if isinstance(text, str) and text.strip():
            log(text.rstrip())


def main(argv: Sequence[str] | None = None, prog: str = "python -m generator.containers.image") -> int:
    """`tritongen image build|tag|dockerfile|lock` (`prog`: the command as the user typed it)."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description="The local Triton container image.")
    sub = parser.add_subparsers(dest="action", required=True)
    build = sub.add_parser("build", help="build the local Triton image (if its inputs changed)")
    build.add_argument("--force", action="store_true", help="rebuild even if the tag exists")
    sub.add_parser("tag", help="print the image tag of the current inputs")
    sub.add_parser("dockerfile", help="print the rendered Dockerfile")
    sub.add_parser("lock", help="re-resolve requirements.in into requirements.lock")
    args = parser.parse_args(argv)

    if args.action == "tag":
        print(image_tag())
        return 0
    if args.action == "dockerfile":
        base = BaseSpec()
        print(render_dockerfile(base, inputs_hash(base)), end="")
        return 0
    if args.action == "lock":
        lock_requirements()
        return 0

    if str(PROJECT_ROOT) not in sys.path and (PROJECT_ROOT / "tests" / "dockerd.py").is_file():
        sys.path.append(str(PROJECT_ROOT))  # the console script does not see the checkout's tests/
    from tests.dockerd import DockerUnavailable, docker_engine

    try:
        with docker_engine() as engine:
            print(f"docker engine: {engine.host}{' (started)' if engine.owned else ''}")
            tag = build_image(engine.host, force=args.force)
    except (DockerUnavailable, ImageBuildError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(tag)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
