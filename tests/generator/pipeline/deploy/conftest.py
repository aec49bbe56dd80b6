"""Fixtures of the Kubernetes tests: a plan per target, its manifests and their folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from generator.pipeline.deploy import kubernetes
from generator.pipeline.deploy.kserve import render_kserve
from generator.pipeline.generate import DEFAULT_SPECS
from generator.pipeline.plan import RepositoryPlan, plan_repository
from generator.pipeline.spec import load_specs
from tests.generator.pipeline.deploy.kustomize import FILES


@pytest.fixture(scope="module", params=[("local", 2), ("ngc", 16)], ids=["local-2", "ngc-16"])
def plan(request: pytest.FixtureRequest) -> RepositoryPlan:
    target, cores = request.param
    return plan_repository(load_specs(DEFAULT_SPECS), target, cores)


@pytest.fixture(scope="module")
def manifests(plan: RepositoryPlan) -> dict[str, str]:
    """Every file in `deploy/k8s/` (the Kubernetes output's and KServe's)."""
    return dict(sorted({**kubernetes.render_manifests(plan, FILES), **render_kserve(plan)}.items()))


@pytest.fixture(scope="module")
def tree(manifests: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repository")
    for path, text in manifests.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root / kubernetes.K8S_DIR
