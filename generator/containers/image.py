"""The local Triton image: Debian bookworm + tritonserver 2.51 from the nvidia-pytriton wheel.

Nothing is pulled. The base is a `debootstrap --variant=minbase` rootfs (with python3.11,
libpython3.11 for the python backend stub, and pip) imported into Docker and tagged
`tritongen-base:bookworm-<hash>`. On top of it the engine's classic builder, with no network,
installs the locked Python packages from a wheelhouse downloaded on the host
(`build/image/context/wheels`) and the project's own packages (`backends/<name>/pyproject.toml`,
e.g. `tritongen_textprep`), copies `generator/tritonserver.py` and `backends/triton/` and
runs `python -m generator.serving.tritonserver assemble /opt/tritonserver/backends`: the same
function `tritongen serve` uses. `/opt/tritonserver/bin/tritonserver` links to the wheel's
server, so the image has the layout of NVIDIA's images (`nvcr.io/nvidia/tritonserver`) and one
command line serves a repository in both.

The image tag is a content hash of every input (Dockerfile template, locked packages, base,
backends and the project's packages they import, `generator/tritonserver.py`); an image that
exists is not rebuilt. It is also tagged
`tritongen-triton:latest`, the name the deploy files use.

CLI: `python -m generator.containers.image build [--force]`, `tag`, `dockerfile`, `lock`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import string
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from generator.serving.tritonserver import (
    PROJECT_ROOT,
    PYTHON_BACKENDS_DIR,
    STUB_PYTHON,
    ServerOptions,
    ServerPorts,
    TritonInstall,
    server_command,
)

if TYPE_CHECKING:
    import docker

DATA_DIR = Path(__file__).resolve().parent / "image_data"
DOCKERFILE_TEMPLATE = DATA_DIR / "Dockerfile.in"
REQUIREMENTS_IN = DATA_DIR / "requirements.in"
REQUIREMENTS_NODEPS_IN = DATA_DIR / "requirements-nodeps.in"
REQUIREMENTS_LOCK = DATA_DIR / "requirements.lock"
IMAGE_MODULES = ("generator/__init__.py", "generator/serving/__init__.py", "generator/serving/tritonserver.py")
"""The project modules the image build runs (`python -m generator.serving.tritonserver assemble`)."""
BUILD_DIR = PROJECT_ROOT / "build" / "image"
LOCAL_PACKAGES_DIR = PROJECT_ROOT / "backends"
"""Holds the project's own packages (`<name>/pyproject.toml`) the backends import."""
_SKIPPED_PARTS = ("__pycache__", "build", "dist")

IMAGE_REPOSITORY = "tritongen-triton"
LATEST_TAG = f"{IMAGE_REPOSITORY}:latest"
BASE_REPOSITORY = "tritongen-base"
NGC_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
"""NVIDIA's image of the same Triton release (r24.10, 2.51); needs registry access."""

RECIPE_VERSION = "1"
"""Bump when the build steps change in a way the hashed inputs do not show."""

CONTAINER_TRITON_ROOT = Path("/opt/tritonserver")
"""Where both the local image and NVIDIA's keep `bin/tritonserver` and `backends/`."""
CONTAINER_REPOSITORY = Path("/models")
IMAGE_SITE_PACKAGES = Path(f"/usr/local/lib/python{STUB_PYTHON}/dist-packages")
IMAGE_PYTRITON_ROOT = IMAGE_SITE_PACKAGES / "pytriton" / "tritonserver"

Log = Callable[[str], None]


class ImageBuildError(RuntimeError):
    """The base or the image could not be built (the message carries the log tail)."""


@dataclass(frozen=True)
class BaseSpec:
    """What the debootstrap base contains; its hash names the base image."""

    suite: str = "bookworm"
    variant: str = "minbase"
    packages: tuple[str, ...] = (f"python{STUB_PYTHON}", f"libpython{STUB_PYTHON}", "python3-pip")

    def digest(self) -> str:
        text = json.dumps(
            {"suite": self.suite, "variant": self.variant, "packages": sorted(self.packages)},
            sort_keys=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def tag(self) -> str:
        return f"{BASE_REPOSITORY}:{self.suite}-{self.digest()}"


def container_command(models: Sequence[str] = (), ports: ServerPorts | None = None, log_verbose: int = 0) -> list[str]:
    """tritonserver's command line inside a container (local image or NVIDIA's)."""
    options = ServerOptions(
        repository=CONTAINER_REPOSITORY,
        ports=ports or ServerPorts(),
        address="0.0.0.0",
        models=tuple(models),
        log_verbose=log_verbose,
    )
    install = TritonInstall(CONTAINER_TRITON_ROOT)
    return server_command(options, CONTAINER_TRITON_ROOT / "backends", install)


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


def _source_files(folder: Path) -> list[Path]:
    """Files under `folder` that are sources (no caches, build outputs or egg-info)."""
    if not folder.is_dir():
        return []
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and path.suffix != ".pyc"
        and not any(part in _SKIPPED_PARTS or part.endswith(".egg-info") for part in path.relative_to(folder).parts)
    )


def local_packages(packages_dir: Path = LOCAL_PACKAGES_DIR) -> list[Path]:
    """The project's installable packages: `backends/<name>/pyproject.toml`."""
    if not packages_dir.is_dir():
        return []
    return sorted(path.parent for path in packages_dir.glob("*/pyproject.toml"))


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
    for module in IMAGE_MODULES:
        add(module, (PROJECT_ROOT / module).read_bytes())
    for path in _source_files(python_backends):
        add(f"backends/{path.relative_to(python_backends).as_posix()}", path.read_bytes())
    for package in local_packages():
        for path in _source_files(package):
            name = f"packages/{package.name}/{path.relative_to(package).as_posix()}"
            add(name, path.read_bytes())
    return digest.hexdigest()[:16]


def image_tag(base: BaseSpec | None = None, python_backends: Path = PYTHON_BACKENDS_DIR) -> str:
    """`tritongen-triton:<inputs hash>`."""
    return f"{IMAGE_REPOSITORY}:{inputs_hash(base, python_backends)}"


def render_dockerfile(base: BaseSpec, digest: str) -> str:
    """The Dockerfile for `base`; `digest` is recorded as a label."""
    pins = _lock_pins()
    return string.Template(DOCKERFILE_TEMPLATE.read_text()).substitute(
        base_image=base.tag,
        triton_root=str(IMAGE_PYTRITON_ROOT),
        pytriton_version=pins.get("nvidia-pytriton", "?"),
        inputs_hash=digest,
        command=json.dumps(container_command()),
    )


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


def download_wheels(wheelhouse: Path, log: Log = print) -> None:
    """Download the locked wheels (no dependencies, binaries only) into `wheelhouse`."""
    wheelhouse.mkdir(parents=True, exist_ok=True)
    log(f"downloading locked wheels into {wheelhouse}")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            str(wheelhouse),
            "-r",
            str(REQUIREMENTS_LOCK),
        ],
        capture_output=True,
        text=True,
    )
    noise = re.compile(r"WARNING: Location '.*' is ignored")
    for line in (result.stdout + result.stderr).splitlines():
        if line.strip() and not noise.match(line):
            log(line)
    if result.returncode != 0:
        raise ImageBuildError(f"pip download failed ({result.returncode})")
    wanted = _lock_pins()
    for wheel in wheelhouse.glob("*.whl"):
        name, version = wheel.name.split("-")[:2]
        if wanted.get(_normalize(name)) != version.replace("%2B", "+"):
            wheel.unlink()  # a stale pin
    shutil.copy2(REQUIREMENTS_LOCK, wheelhouse / "requirements.lock")


def prepare_context(
    context: Path,
    base: BaseSpec,
    digest: str,
    python_backends: Path = PYTHON_BACKENDS_DIR,
    log: Log = print,
) -> Path:
    """Lay out the build context: Dockerfile, wheels/, packages/, src/ (generator, backends)."""
    context.mkdir(parents=True, exist_ok=True)
    download_wheels(context / "wheels", log)
    src = context / "src"
    shutil.rmtree(src, ignore_errors=True)
    for module in IMAGE_MODULES:
        (src / module).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT_ROOT / module, src / module)
    backends = src / "backends" / "triton"
    backends.mkdir(parents=True)
    _copy_sources(python_backends, backends)
    packages = context / "packages"
    shutil.rmtree(packages, ignore_errors=True)
    packages.mkdir()
    for package in local_packages():
        _copy_sources(package, packages / package.name)
    (context / "Dockerfile").write_text(render_dockerfile(base, digest))
    return context


def _copy_sources(source: Path, destination: Path) -> None:
    destination.mkdir(parents=True, exist_ok=True)
    for path in _source_files(source):
        target = destination / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


def build_image(
    docker_host: str | None = None,
    force: bool = False,
    base: BaseSpec | None = None,
    python_backends: Path = PYTHON_BACKENDS_DIR,
    log: Log = print,
) -> str:
    """Build the local Triton image unless its content-hash tag exists; return the tag.

    `docker_host` defaults to `$DOCKER_HOST` (or the default socket).
    """
    base = base or BaseSpec()
    digest = inputs_hash(base, python_backends)
    tag = f"{IMAGE_REPOSITORY}:{digest}"
    client = _client(docker_host)
    try:
        if not force and _image_exists(client, tag):
            log(f"image {tag} exists (inputs unchanged)")
            client.api.tag(tag, IMAGE_REPOSITORY, "latest")
            return tag
        started = time.monotonic()
        ensure_base_image(client, base, log)
        context = prepare_context(BUILD_DIR / "context", base, digest, python_backends, log)
        log(f"building {tag}")
        _stream_build(client, context, tag, log)
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


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m generator.containers.image build|tag|dockerfile|lock`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m generator.containers.image")
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
