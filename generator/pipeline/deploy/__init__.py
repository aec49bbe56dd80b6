"""Deploy outputs: the files that run a generated repository somewhere, written into it.

A `DeployOutput` (`base.py`) renders repository-relative files from the plan (and the
repository's other generated files, whose digest names the image generation); `generate`
writes every output in `DEPLOY_OUTPUTS`. Adding an output is one module with one
`DeployOutput` subclass and an entry in `DEPLOY_OUTPUTS`:

    docker_run.py   docker-run.sh             one `docker run` line, the target's image
    compose.py      docker-compose.yml        one `triton` service, the target's image
    kubernetes.py   deploy/k8s/ (but kserve/) kustomize base and overlays, the HPA's metric
    kserve.py       deploy/k8s/kserve/        KServe ServingRuntime + InferenceService

They share the container launch (`launcher.py`): the admin-key launcher script and
tritonserver's command line. Every output depends only on its arguments (no clock, no host paths).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from generator.base.launch import ServerPorts, ServerSettings
from generator.kinds.targets import LOCAL, Target
from generator.pipeline.deploy.base import DeployOutput
from generator.pipeline.deploy.compose import Compose, render_compose
from generator.pipeline.deploy.docker_run import DEFAULT_SHM_SIZE, DockerRun, render_docker_run
from generator.pipeline.deploy.kserve import KServe
from generator.pipeline.deploy.kubernetes import Kubernetes
from generator.pipeline.plan import RepositoryPlan

DEPLOY_OUTPUTS: dict[str, DeployOutput] = {
    output.name: output for output in (DockerRun(), Compose(), Kubernetes(), KServe())
}
"""Every deploy output by name."""


def render_deploy_outputs(plan: RepositoryPlan, repository_files: Mapping[str, str]) -> dict[str, str]:
    """Repository-relative path -> text of every deploy output's files for `plan`, by path."""
    files: dict[str, str] = {}
    for output in DEPLOY_OUTPUTS.values():
        rendered = output.render(plan, repository_files)
        clash = sorted(set(rendered) & set(files))
        if clash:
            raise ValueError(f"deploy output {output.name} writes files another output writes: {clash}")
        files.update(rendered)
    return dict(sorted(files.items()))


def render_deploy_files(
    repository_dir: str,
    ports: ServerPorts | None = None,
    target: Target | str = LOCAL,
    image: str | None = None,
    shm_size: str = DEFAULT_SHM_SIZE,
    models: Sequence[str] = (),
    settings: ServerSettings | None = None,
) -> dict[str, str]:
    """`{"docker-compose.yml": ..., "docker-run.sh": ...}` serving `repository_dir` (relative:
    to the folder the files are written to) with `target`'s image unless `image` is given
    (`settings`: the repository plan's `server_settings()`)."""
    arguments = (repository_dir, ports, target, image, shm_size, tuple(models), settings)
    return {
        "docker-compose.yml": render_compose(*arguments),
        "docker-run.sh": render_docker_run(*arguments),
    }


__all__ = ["DEPLOY_OUTPUTS", "DeployOutput", "render_deploy_files", "render_deploy_outputs"]
