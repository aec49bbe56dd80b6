"""KServe: a ServingRuntime and an InferenceService serving the repository from a volume,
`deploy/k8s/kserve/` in the repository.

KServe's storage initializer brings the repository to /mnt/models; the runtime runs the target's
server image (not the baked one) with the same launcher, security, resources and probes as the
Kubernetes Deployment, on KServe's ports.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from generator.base.launch import ServerOptions, ServerPorts
from generator.pipeline.deploy.base import DeployOutput
from generator.pipeline.deploy.kubernetes import (
    APP,
    K8S_DIR,
    MAX_REPLICAS,
    MIN_REPLICAS,
    PVC_NAME,
    SECRET_NAME,
    dump,
    file_header,
    kustomization,
    pod_labels,
    pod_resources,
    pod_security,
    pod_volumes,
    server_container,
    server_image,
    sizing,
)
from generator.pipeline.deploy.launcher import LAUNCH_COMMAND, triton_command
from generator.pipeline.plan import RepositoryPlan

KSERVE_REPOSITORY = "/mnt/models"
"""Where KServe's storage initializer puts the repository."""
KSERVE_PORTS = ServerPorts(http=8080, grpc=9000, metrics=8002)
"""KServe's ports for the Triton runtime (HTTP 8080, gRPC 9000)."""


def serving_runtime(plan: RepositoryPlan) -> dict[str, Any]:
    """A KServe ServingRuntime: the server image (not the baked one: KServe brings the repository
    to /mnt/models), the same launcher, security, resources and probes as the Deployment."""
    size = sizing(plan)
    options = ServerOptions(
        repository=Path(KSERVE_REPOSITORY),
        ports=KSERVE_PORTS,
        address="0.0.0.0",
        models=tuple(plan.model_names()),
        settings=plan.server_settings(),
    )
    command = triton_command(options, plan.target)
    container = server_container(
        plan, size, server_image(plan), [*LAUNCH_COMMAND, *command], KSERVE_PORTS, "kserve-container"
    )
    container["ports"] = [{"name": "http", "containerPort": KSERVE_PORTS.http, "protocol": "TCP"}]
    container["startupProbe"]["httpGet"]["port"] = KSERVE_PORTS.http
    container["readinessProbe"]["httpGet"]["port"] = KSERVE_PORTS.http
    container["livenessProbe"]["httpGet"]["port"] = KSERVE_PORTS.http
    volumes, _ = pod_volumes(size)
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {"name": f"{APP}-triton", "labels": pod_labels()},
        "spec": {
            "annotations": {
                "prometheus.kserve.io/port": str(KSERVE_PORTS.metrics),
                "prometheus.kserve.io/path": "/metrics",
            },
            "supportedModelFormats": [{"name": "triton", "version": "2", "autoSelect": False}],
            "protocolVersions": ["v2", "grpc-v2"],
            "securityContext": pod_security(),
            "containers": [container],
            "volumes": volumes,
        },
    }


def inference_service(plan: RepositoryPlan) -> dict[str, Any]:
    """A KServe InferenceService serving the repository from PVC_NAME with the runtime above."""
    size = sizing(plan)
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": APP,
            "labels": pod_labels(),
            "annotations": {"serving.kserve.io/deploymentMode": "RawDeployment"},
        },
        "spec": {
            "predictor": {
                "minReplicas": MIN_REPLICAS,
                "maxReplicas": MAX_REPLICAS,
                "model": {
                    "modelFormat": {"name": "triton", "version": "2"},
                    "runtime": f"{APP}-triton",
                    "storageUri": f"pvc://{PVC_NAME}/",
                    "resources": pod_resources(size),
                },
            }
        },
    }


def render_kserve(plan: RepositoryPlan) -> dict[str, str]:
    """Repository-relative path -> text of the KServe files for `plan`."""
    header = file_header(plan)
    files = {
        f"{K8S_DIR}/kserve/servingruntime.yaml": dump(serving_runtime(plan), header=header),
        f"{K8S_DIR}/kserve/inferenceservice.yaml": dump(inference_service(plan), header=header),
        f"{K8S_DIR}/kserve/kustomization.yaml": dump(
            kustomization(["servingruntime.yaml", "inferenceservice.yaml"]),
            header=header + f"\nKServe: the repository from the PVC {PVC_NAME}, the Secret {SECRET_NAME} as above.",
        ),
    }
    return dict(sorted(files.items()))


class KServe(DeployOutput):
    """`deploy/k8s/kserve/`: the repository served by KServe from the PVC."""

    name = "kserve"

    def render(self, plan: RepositoryPlan, repository_files: Mapping[str, str]) -> dict[str, str]:
        return render_kserve(plan)
