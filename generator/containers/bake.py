"""Bake a generated repository into an image, for Kubernetes: the server image plus `/models`.

The image is built `FROM` the server image the manifests were generated for (the local image,
built by `generator.containers.image.build_image`, or NVIDIA's), with the repository copied to
`/models` (everything but `deploy/`), owned by root and readable by every user, `USER` the
pod's non-root user and `CMD` the Deployment's own container arguments (the admin-key
launcher, then tritonserver loading every model). Nothing is pulled; the build has no network.

Its name is the one `deploy/k8s/base/deployment.yaml` states (`tritongen-repository:<generation>`,
a digest of the repository's generated files and the server image's name, see
`generator.pipeline.deploy.kubernetes.generation`), and so is the pod's user: bake reads those
there, so the image and the Kubernetes manifests cannot disagree. The server image (the target's
`server_image`), the model list and the server settings come from the repository's
`tritongen-manifest.json`. For
the `local` target the server image is the local stand-in under a stable name
(`tritongen-triton:24.10-py3`, LOCAL_SERVER_IMAGE): the CLI builds it
(`generator.containers.image.build_image`) and gives it that name first. An image that exists
is not rebuilt unless the image it was built FROM changed (SERVER_ID_LABEL).

CLI: `tritongen bake [REPOSITORY] [--server-image IMAGE] [--force] [--print-plan]` (or
`python -m generator.containers.bake`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from generator import PROJECT_ROOT
from generator.containers.image import build_image
from generator.kinds.targets import LOCAL, Target, UnknownTargetError, get_target
from generator.kinds.targets.local import IMAGE_REPOSITORY
from generator.pipeline.deploy import kubernetes
from generator.pipeline.deploy.launcher import CONTAINER_REPOSITORY, launch_arguments
from generator.pipeline.manifest import Manifest, ManifestError

if TYPE_CHECKING:
    import docker

LOCAL_SERVER_IMAGE = LOCAL.server_image
"""The local stand-in under NVIDIA's release tag (`tritongen-triton:24.10-py3`): the name the
`local` manifests use, stable across machines (the content tag of `image.build_image` depends on
the machine's Python builds), given to the built image by `tag_local_server`."""
SERVER_ID_LABEL = "tritongen.server-image-id"
"""Label of a baked image: the id of the image it was built FROM (a changed one means a rebuild)."""
DEPLOYMENT_FILE = Path(kubernetes.DEPLOYMENT_FILE)
"""Where `tritongen generate` writes the Deployment (relative to the repository)."""
EXCLUDED = ("deploy",)
"""Top-level repository entries not copied into the image (manifests are not served)."""
Log = Callable[[str], None]


class BakeError(RuntimeError):
    """The repository has no usable manifests or the image could not be built."""


@dataclass(frozen=True)
class BakePlan:
    """What to build, read from the repository's manifest and its generated Deployment."""

    image: str
    """The baked image's reference (the Deployment's container image)."""
    server_image: str
    """The image to build FROM."""
    arguments: tuple[str, ...]
    """The container's arguments (becomes the image's CMD)."""
    user: str
    """`uid:gid` of the pod (becomes the image's USER)."""


def manifest_target(manifest: Manifest) -> Target:
    """The target the repository was generated for: its pods run its `server_image`, which the
    repository is baked FROM."""
    try:
        return get_target(manifest.target)
    except UnknownTargetError as error:
        raise BakeError(str(error)) from None


def read_bake_plan(repository: Path) -> BakePlan:
    """The baked image's server image and CMD from the repository's manifest, its USER from the
    Kubernetes output's pod identity, and its name as the generated Deployment states it: the
    tag is a digest of the repository's files, the manifest among them, so the manifest cannot
    hold it."""
    try:
        manifest = Manifest.read(repository)
    except ManifestError as error:
        raise BakeError(str(error)) from None
    path = repository / DEPLOYMENT_FILE
    try:
        deployment = yaml.safe_load(path.read_text(encoding="utf-8"))
        template = deployment["spec"]["template"]
        image = str(template["spec"]["containers"][0]["image"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, IndexError) as error:
        raise BakeError(f"{path}: no generated Deployment to bake for ({error}); run `tritongen generate`") from error
    target = manifest_target(manifest)
    return BakePlan(
        image=image,
        server_image=target.server_image,
        arguments=tuple(launch_arguments(manifest.names(), manifest.server_settings(), target)),
        user=f"{kubernetes.RUN_AS}:{kubernetes.RUN_AS}",
    )


def render_dockerfile(plan: BakePlan) -> str:
    """The Dockerfile of the baked image."""
    return "\n".join(
        [
            "# Generated by generator/containers/bake.py: the server image plus the model repository.",
            f"FROM {plan.server_image}",
            f"COPY repository/ {CONTAINER_REPOSITORY}/",
            f"USER {plan.user}",
            f"LABEL tritongen.image=repository tritongen.server-image={json.dumps(plan.server_image)}",
            f"CMD {json.dumps(list(plan.arguments))}",
            "",
        ]
    )


def _ignore_excluded(root: Path) -> Callable[[str, list[str]], list[str]]:
    def ignore(folder: str, names: list[str]) -> list[str]:
        if Path(folder) == root:
            return [name for name in names if name in EXCLUDED]
        return [name for name in names if name == "__pycache__"]

    return ignore


def _link_readable(source: str, destination: str) -> None:
    """Hard-link a file into the context (same content, no copy) when every user may read it
    (and run it, if anyone may): the pod runs as a non-root user. Otherwise copy it with mode
    0755 (executables, e.g. a shipped stub) or 0644."""
    mode = stat.S_IMODE(os.stat(source).st_mode)
    executable = bool(mode & 0o111)
    wanted = 0o755 if executable else 0o644
    if mode & wanted == wanted:
        try:
            os.link(source, destination)
            return
        except OSError:
            pass
    shutil.copyfile(source, destination)
    os.chmod(destination, wanted)


def prepare_context(repository: Path, plan: BakePlan, context: Path) -> Path:
    """Lay out the build context: `Dockerfile` and `repository/` (links resolved)."""
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    shutil.copytree(
        repository,
        context / "repository",
        symlinks=False,
        ignore=_ignore_excluded(repository),
        copy_function=_link_readable,
    )
    for folder in [context / "repository", *(p for p in (context / "repository").rglob("*") if p.is_dir())]:
        folder.chmod(0o755)
    (context / "Dockerfile").write_text(render_dockerfile(plan), encoding="utf-8")
    return context


def _client(host: str | None) -> docker.DockerClient:
    import docker

    return docker.DockerClient(base_url=host) if host else docker.from_env()


def image_exists(client: docker.DockerClient, reference: str) -> bool:
    import docker.errors

    try:
        client.images.get(reference)
    except docker.errors.ImageNotFound:
        return False
    return True


def bake_image(
    repository: Path,
    docker_host: str | None = None,
    server_image: str | None = None,
    force: bool = False,
    log: Log = print,
) -> str:
    """Build the repository's baked image unless it exists; return its reference.

    `server_image` overrides the Deployment's server image (e.g. a local build of it under
    another name); the baked image keeps the name the manifests state.
    """
    plan = read_bake_plan(repository)
    if server_image is not None:
        plan = BakePlan(plan.image, server_image, plan.arguments, plan.user)
    client = _client(docker_host)
    try:
        if not image_exists(client, plan.server_image):
            hint = (
                "build it with `python -m generator.containers.bake`, which builds the local image first"
                if plan.server_image.startswith(f"{IMAGE_REPOSITORY}:")
                else "pull it first (needs registry access)"
            )
            raise BakeError(f"the server image {plan.server_image} is not in the engine: {hint}")
        server_id = str(client.images.get(plan.server_image).id)
        if not force and image_exists(client, plan.image):
            if client.images.get(plan.image).labels.get(SERVER_ID_LABEL) == server_id:
                log(f"image {plan.image} exists (same repository generation, same server image)")
                return plan.image
            log(f"image {plan.image} was built FROM another {plan.server_image}: rebuilding")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="bake-", dir=_context_parent(repository)) as folder:
            context = prepare_context(repository, plan, Path(folder) / "context")
            log(f"baking {repository} into {plan.image} (FROM {plan.server_image})")
            _stream_build(client, context, plan.image, log, {SERVER_ID_LABEL: server_id})
        log(f"baked {plan.image} in {time.monotonic() - started:.0f}s")
        return plan.image
    finally:
        client.close()


def _context_parent(repository: Path) -> Path:
    """A folder on the repository's filesystem (hard links need one filesystem)."""
    return repository.resolve().parent


def tag_local_server(client: docker.DockerClient, built: str) -> str:
    """Give the local image `built` (a content tag) the stable name the manifests use."""
    repository, _, tag = LOCAL_SERVER_IMAGE.rpartition(":")
    client.api.tag(built, repository, tag)
    return LOCAL_SERVER_IMAGE


def _stream_build(
    client: docker.DockerClient, context: Path, tag: str, log: Log, labels: dict[str, str] | None = None
) -> None:
    chunks: Iterable[dict[str, Any]] = client.api.build(
        path=str(context),
        tag=tag,
        rm=True,
        forcerm=True,
        pull=False,
        network_mode="none",
        decode=True,
        labels={"tritongen.image": "repository", **(labels or {})},
    )
    for chunk in chunks:
        if "error" in chunk:
            raise BakeError(f"docker build of {tag} failed: {chunk['error']}")
        text = chunk.get("stream", "")
        if isinstance(text, str) and text.strip() and not text.startswith(" ---> "):
            log(text.rstrip())


def main(argv: Sequence[str] | None = None, prog: str = "python -m generator.containers.bake") -> int:
    """`tritongen bake [REPOSITORY] [--server-image IMAGE] [--force]` (`prog`: the command as typed)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument(
        "repository",
        nargs="?",
        type=Path,
        default=PROJECT_ROOT / "repository",
        help="the generated repository to bake (default: repository/)",
    )
    parser.add_argument("--server-image", default=None, help="build FROM this image instead of the manifests' one")
    parser.add_argument("--force", action="store_true", help="rebuild even if the image exists")
    parser.add_argument("--print-plan", action="store_true", help="print the Dockerfile and exit")
    args = parser.parse_args(argv)
    if str(PROJECT_ROOT) not in sys.path and (PROJECT_ROOT / "tests" / "dockerd.py").is_file():
        sys.path.append(str(PROJECT_ROOT))  # the console script does not see the checkout's tests/
    from tests.dockerd import DockerUnavailable, docker_engine

    try:
        plan = read_bake_plan(args.repository)
        if args.print_plan:
            print(render_dockerfile(plan), end="")
            return 0
        with docker_engine() as engine:
            if args.server_image is None and plan.server_image == LOCAL_SERVER_IMAGE:
                client = _client(engine.host)
                try:
                    tag_local_server(client, build_image(engine.host))
                finally:
                    client.close()
            print(bake_image(args.repository, engine.host, args.server_image, args.force))
    except (BakeError, DockerUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
