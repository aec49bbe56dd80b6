"""Bake step: what it builds is what the generated Deployment states, with readable files."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import yaml

from generator.containers.bake import DEPLOYMENT_FILE, BakeError, prepare_context, read_bake_plan, render_dockerfile
from generator.pipeline.deploy import kubernetes as k8s
from generator.pipeline.generate import DEFAULT_SPECS
from generator.pipeline.plan import plan_repository
from generator.pipeline.spec import load_specs


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository folder with a model, a not-world-readable executable, the Kubernetes
    manifests and the repository's manifest."""
    root = tmp_path_factory.mktemp("repository")
    plan = plan_repository(load_specs(DEFAULT_SPECS), "local", 2)
    plan.manifest().write(root)
    for path, text in k8s.render_manifests(plan, {"m/config.pbtxt": 'name: "m"\n'}).items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    (root / "m" / "1").mkdir(parents=True)
    (root / "m" / "config.pbtxt").write_text('name: "m"\n')
    stub = root / "m" / "triton_python_backend_stub"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o100)  # what the python backend's chmod(S_IXUSR) leaves behind
    return root


def test_the_plan_is_the_deployments(repository: Path) -> None:
    plan = read_bake_plan(repository)
    deployment = yaml.safe_load((repository / DEPLOYMENT_FILE).read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert plan.image == container["image"] and plan.image.startswith(f"{k8s.BAKED_IMAGE}:")
    assert plan.server_image == deployment["spec"]["template"]["metadata"]["annotations"][k8s.SERVER_IMAGE_ANNOTATION]
    assert plan.arguments == tuple(container["args"]) and plan.user == f"{k8s.RUN_AS}:{k8s.RUN_AS}"
    dockerfile = render_dockerfile(plan)
    assert dockerfile.splitlines()[1] == f"FROM {plan.server_image}"
    assert "COPY repository/ /models/" in dockerfile and f"USER {plan.user}" in dockerfile
    assert json.loads(dockerfile.split("CMD ", 1)[1]) == list(container["args"])


def test_context_has_the_models_readable_by_the_pod_user_and_no_manifests(repository: Path, tmp_path: Path) -> None:
    context = prepare_context(repository, read_bake_plan(repository), tmp_path / "context")
    copied = context / "repository"
    assert (copied / "m" / "config.pbtxt").read_text() == 'name: "m"\n'
    assert not (copied / "deploy").exists()
    assert stat.S_IMODE((copied / "m" / "triton_python_backend_stub").stat().st_mode) == 0o755
    assert stat.S_IMODE((copied / "m" / "config.pbtxt").stat().st_mode) & 0o444 == 0o444
    assert stat.S_IMODE((repository / "m" / "triton_python_backend_stub").stat().st_mode) == 0o100  # untouched


def test_a_repository_without_manifests_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BakeError, match="tritongen generate"):
        read_bake_plan(tmp_path)


def test_cli_prints_the_dockerfile(repository: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from generator.cli import main

    assert main(["bake", "--print-plan", str(repository)]) == 0
    assert capsys.readouterr().out == render_dockerfile(read_bake_plan(repository))
