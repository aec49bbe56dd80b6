"""KServe's variant: a ServingRuntime and an InferenceService consistent with each other and
with the plan, the embedded Kubernetes parts valid against the core schemas."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate

from generator.base.launch import ADMIN_KEY_VARIABLE
from generator.pipeline.deploy import kubernetes as k8s
from generator.pipeline.deploy.kserve import KSERVE_REPOSITORY
from generator.pipeline.deploy.launcher import LAUNCH_COMMAND
from generator.pipeline.plan import RepositoryPlan
from tests.generator.pipeline.deploy.kustomize import KUBERNETES_VERSIONS, by_kind, kustomize


def test_kserve_variant(plan: RepositoryPlan, tree: Path) -> None:
    objects = by_kind(kustomize(tree / "kserve"))
    runtime, service = objects["ServingRuntime"], objects["InferenceService"]
    assert (
        runtime["apiVersion"] == "serving.kserve.io/v1alpha1" and service["apiVersion"] == "serving.kserve.io/v1beta1"
    )
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["storageUri"] == f"pvc://{k8s.PVC_NAME}/"
    (container,) = runtime["spec"]["containers"]
    assert container["name"] == "kserve-container" and container["image"] == k8s.server_image(plan)
    args = container["args"]
    assert args[: len(LAUNCH_COMMAND)] == list(LAUNCH_COMMAND)
    assert f"--model-repository={KSERVE_REPOSITORY}" in args and "--http-port=8080" in args
    assert sorted(a.removeprefix("--load-model=") for a in args if a.startswith("--load-model=")) == plan.model_names()
    assert [p["containerPort"] for p in container["ports"]] == [8080]
    assert all(container[p]["httpGet"]["port"] == 8080 for p in ("startupProbe", "readinessProbe", "livenessProbe"))
    assert container["securityContext"]["readOnlyRootFilesystem"]
    assert {e["name"]: e.get("valueFrom") for e in container["env"]}[ADMIN_KEY_VARIABLE] == {
        "secretKeyRef": {"name": k8s.SECRET_NAME, "key": k8s.SECRET_KEY}
    }
    assert model["resources"] == container["resources"]
    # The embedded Kubernetes parts validate against the core schemas.
    pod_spec = {"containers": [container], "volumes": runtime["spec"]["volumes"]}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": pod_spec}
    kubernetes_validate.validate(pod, KUBERNETES_VERSIONS[-1], strict=True)
