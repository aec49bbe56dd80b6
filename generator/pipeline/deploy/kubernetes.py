"""Kubernetes manifests for a generated repository, from its plan: `deploy/k8s/` in the repository.

Everything Kubernetes needs to know about a repository lives here (KServe's variant in
`kserve.py`) and is derived from the `RepositoryPlan` (models, instances, CPU budget, target)
and the repository's generated files (their digest names the image generation), never from
generated text:

    deploy/k8s/base/                kustomize base: Deployment, Service, PodDisruptionBudget, HPA
    deploy/k8s/overlays/example/    namespace, registry, replica bounds (copy it OUTSIDE the
                                    repository to make your own: `generate` replaces this folder)
    deploy/k8s/overlays/volume/     the server image with the repository from a volume (PVC)
    deploy/k8s/prometheus-adapter-values.yaml   the HPA's queue-time metric (Helm values)

The pod runs the image with the repository baked in (`tritongen-repository:<generation>`, built
by `generator.containers.bake` FROM the target's `server_image`), with the same command line as
the deploy files (the admin-key launcher, explicit model control loading every model), the
admin key from a Secret (`secretKeyRef`), Guaranteed QoS with CPU = the plan's core budget and
memory = the plan's pod memory (`RepositoryPlan.pod_memory_mib`: the expected memory from the
measured footprints of the target's server and each instance, with MEMORY_HEADROOM; the same
figure `generate` checks against the repository's memory budget), `/dev/shm` and `/tmp` as
emptyDirs under a read-only root filesystem, non-root,
no privilege escalation, no capabilities, seccomp RuntimeDefault, probes on `/v2/health/ready`
and `/v2/health/live` timed from the measured load.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from generator.base.launch import ADMIN_KEY_VARIABLE, THREAD_VARIABLES, ServerPorts
from generator.pipeline.deploy.base import DeployOutput
from generator.pipeline.deploy.launcher import CONTAINER_PORTS, launch_arguments
from generator.pipeline.plan import STUB_SHM_MIB, RepositoryPlan
from generator.pipeline.repository_settings import MEMORY_HEADROOM as MEMORY_HEADROOM

K8S_DIR = "deploy/k8s"
"""Where the manifests go, relative to the repository root (a folder without config.pbtxt:
Triton lists it in its repository index, but `serve`, the deploy files and the pod load models
by name, so it is never loaded; docs/repository.md, "Layout")."""
DEPLOYMENT_FILE = f"{K8S_DIR}/base/deployment.yaml"
"""The Deployment, relative to the repository (bake reads the baked image's name there)."""
APP = "tritongen"
BAKED_IMAGE = "tritongen-repository"
"""Name of the image with the repository baked in; its tag is the repository's generation."""
SECRET_NAME = "tritongen-admin-key"
SECRET_KEY = "admin-key"
RUN_AS = 1000
"""uid = gid = fsGroup of the pod (NVIDIA's image has `triton-server` with uid 1000)."""
PVC_NAME = "tritongen-repository"
"""PersistentVolumeClaim holding a copy of the repository (volume variant and KServe)."""
SERVER_IMAGE_ANNOTATION = "tritongen.io/server-image"
"""Pod annotation: the server image the baked image is built FROM."""
GENERATION_ANNOTATION = "tritongen.io/generation"
"""Pod annotation: the repository's generation (the baked image's tag)."""


@dataclass(frozen=True)
class Measured:
    """Volumes and load time of the shipped specs (4 specs, 2 cores: 19 stub processes) in the
    pod, measured 2026-12-01 by tests/integration/test_k8s_pod.py (which prints these figures on
    every run and fails when the footprint outgrows the pod's memory by more than 25 %): the
    baked local image, uid 1000, read-only root filesystem, CPU limit 2, on a shared 2-core
    machine. The memory figures of the same run (PSS per process after loading and answering
    every entry point over HTTP and gRPC: 2.9 GiB in all, cgroup peak 3.0 GiB) are the kinds'
    own: `Target.server_memory`, `PreprocessingKind.memory`, `InferenceFormat.memory`.
    """

    shm_mib_per_process: float = STUB_SHM_MIB
    """/dev/shm per stub process (the python backend's default 1 MiB region; 19 MiB measured)."""
    environment_mib: float = 120.0
    """One packed environment extracted into /tmp (2 extracted: 237 MiB)."""
    load_seconds: float = 15.0
    """Start to `/v2/health/ready` with every model loaded: 10-15 s, 20 s for a second pod
    starting next to a busy one."""
    processes: int = 19
    """Stub processes of the repository measured."""


MEASURED = Measured()
STARTUP_HEADROOM = 8.0
"""The startup probe allows 8x the measured load time (a busy node, a cold page cache, a slow
volume); it only delays liveness, so a generous budget costs nothing once the pod is up."""
SHM_MIN_MIB = 256
"""/dev/shm size floor: the python backend needs headroom for large batches (as the deploy files)."""
TMP_MIN_MIB = 64
PROBE_PERIOD_S = 5
QUEUE_TARGET_US = 5000
"""HPA target: average queue time per online request (µs) above which a pod counts as saturated."""
CPU_TARGET_PERCENT = 75
MIN_REPLICAS = 2
MAX_REPLICAS = 8
PRESTOP_SLEEP_S = 10
"""Seconds a terminating pod keeps serving while endpoints and load balancers drop it."""
SHUTDOWN_S = 30
"""Seconds Triton gets after SIGTERM to finish in-flight requests (its --exit-timeout-secs default)."""


def server_image(plan: RepositoryPlan) -> str:
    """The server image the target runs (`Target.server_image`: the same name on every machine)."""
    return plan.target.server_image


def generation(plan: RepositoryPlan, repository_files: Mapping[str, str]) -> str:
    """Digest of the repository's generated files and the server image's name: the baked
    image's tag (a new generation gets a new tag, so a rolling update replaces every pod). Only
    the name: the output must not depend on the machine that builds the local image."""
    digest = hashlib.sha256()
    digest.update(f"server-image\0{server_image(plan)}\0".encode())
    for path in sorted(repository_files):
        if path.startswith(f"{K8S_DIR}/") or path.startswith("docker-"):
            continue
        data = repository_files[path].encode()
        digest.update(f"{path}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:16]


# --- sizing from the plan ---------------------------------------------------------------------


@dataclass(frozen=True)
class Sizing:
    """Resources of one pod, from the plan and MEASURED."""

    cpu: int
    memory_mib: int
    shm_mib: int
    tmp_mib: int
    startup_failure_threshold: int
    processes: int
    load_seconds: float
    """Expected start-up time: the measured one, scaled by the number of processes."""


def _round_up(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)


def sizing(plan: RepositoryPlan, measured: Measured = MEASURED) -> Sizing:
    """CPU = the plan's core budget; memory = the plan's pod memory (MEMORY_HEADROOM x its
    expected memory on its target); /tmp fits every packed environment; startup fits the load
    time."""
    processes = sum(p.instances for p in plan.preprocess_models()) + sum(i.instances for i in plan.inference_models())
    shm = max(SHM_MIN_MIB, _round_up(2 * processes * measured.shm_mib_per_process, 64))
    packed = {
        p.environment.name
        for p in plan.preprocess_models()
        if p.environment is not None and not getattr(p.environment, "folder", False)
    }
    tmp = max(TMP_MIN_MIB, _round_up(2 * len(packed) * measured.environment_mib, 64))
    expected_load = measured.load_seconds * max(1.0, processes / max(1, measured.processes))
    return Sizing(
        cpu=plan.cores,
        memory_mib=plan.pod_memory_mib(),
        shm_mib=shm,
        tmp_mib=tmp,
        startup_failure_threshold=max(12, math.ceil(expected_load * STARTUP_HEADROOM / PROBE_PERIOD_S)),
        processes=processes,
        load_seconds=expected_load,
    )


# --- objects -----------------------------------------------------------------------------------


def pod_labels(component: str = "server") -> dict[str, str]:
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": component}


def _selector() -> dict[str, str]:
    return {"app.kubernetes.io/name": APP}


def _probe(path: str, port: str, period: int, failures: int, timeout: int = 3) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def _environment() -> list[dict[str, Any]]:
    """The admin key from the Secret (never a value); thread pools of every process at 1, as
    `tritongen serve` sets them (the backends size their own pools from the configs)."""
    key = {"name": ADMIN_KEY_VARIABLE, "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": SECRET_KEY}}}
    return [key, *({"name": name, "value": "1"} for name in THREAD_VARIABLES)]


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_resources(size: Sizing) -> dict[str, Any]:
    amounts = {"cpu": str(size.cpu), "memory": f"{size.memory_mib}Mi"}
    return {"requests": dict(amounts), "limits": dict(amounts)}


def pod_volumes(size: Sizing) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, mounts): /dev/shm in memory for the python backend's tensors, /tmp on disk for
    the packed environments the python backend extracts; nothing else is writable."""
    volumes = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{size.shm_mib}Mi"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": f"{size.tmp_mib}Mi"}},
    ]
    mounts = [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "tmp", "mountPath": "/tmp"}]
    return volumes, mounts


def _ports(ports: ServerPorts) -> list[dict[str, Any]]:
    return [
        {"name": "http", "containerPort": ports.http, "protocol": "TCP"},
        {"name": "grpc", "containerPort": ports.grpc, "protocol": "TCP"},
        {"name": "metrics", "containerPort": ports.metrics, "protocol": "TCP"},
    ]


def server_container(
    plan: RepositoryPlan, size: Sizing, image: str, arguments: list[str], ports: ServerPorts, name: str
) -> dict[str, Any]:
    _, mounts = pod_volumes(size)
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": arguments,
        "env": _environment(),
        "ports": _ports(ports),
        "resources": pod_resources(size),
        "startupProbe": _probe("/v2/health/ready", "http", PROBE_PERIOD_S, size.startup_failure_threshold),
        "readinessProbe": _probe("/v2/health/ready", "http", PROBE_PERIOD_S, 2),
        "livenessProbe": _probe("/v2/health/live", "http", 10, 3, timeout=5),
        "lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "-c", f"sleep {PRESTOP_SLEEP_S}"]}}},
        "securityContext": _container_security(),
        "volumeMounts": mounts,
    }


def deployment(plan: RepositoryPlan, repository_files: Mapping[str, str]) -> dict[str, Any]:
    """The Deployment: the baked image, one Triton container, rolling updates without a gap."""
    size = sizing(plan)
    volumes, _ = pod_volumes(size)
    tag = generation(plan, repository_files)
    image = f"{BAKED_IMAGE}:{tag}"
    arguments = launch_arguments(plan.model_names(), plan.server_settings(), plan.target)
    container = server_container(plan, size, image, arguments, CONTAINER_PORTS, "triton")
    startup_budget = size.startup_failure_threshold * PROBE_PERIOD_S
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(CONTAINER_PORTS.metrics),
        "prometheus.io/path": "/metrics",
        GENERATION_ANNOTATION: tag,
        SERVER_IMAGE_ANNOTATION: server_image(plan),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": APP, "labels": pod_labels()},
        "spec": {
            "selector": {"matchLabels": _selector()},
            "revisionHistoryLimit": 5,
            "progressDeadlineSeconds": startup_budget + 120,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": pod_labels(), "annotations": annotations},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": PRESTOP_SLEEP_S + SHUTDOWN_S,
                    "securityContext": pod_security(),
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def service() -> dict[str, Any]:
    ports = [
        {"name": "http", "port": CONTAINER_PORTS.http, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"},
        {
            "name": "grpc",
            "port": CONTAINER_PORTS.grpc,
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "kubernetes.io/h2c",
        },
        {
            "name": "metrics",
            "port": CONTAINER_PORTS.metrics,
            "targetPort": "metrics",
            "protocol": "TCP",
            "appProtocol": "http",
        },
    ]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": APP, "labels": pod_labels()},
        "spec": {"type": "ClusterIP", "selector": _selector(), "ports": ports},
    }


def pod_disruption_budget() -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": APP, "labels": pod_labels()},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": _selector()}},
    }


QUEUE_METRIC = "tritongen_queue_us_per_request"
"""The HPA's pod metric, served by the Prometheus adapter (prometheus-adapter-values.yaml)."""


def horizontal_pod_autoscaler(plan: RepositoryPlan) -> dict[str, Any]:
    """autoscaling/v2 on the average queue time per online request, CPU utilisation as fallback
    (the HPA takes the larger proposal and still scales on CPU when the custom metric is missing)."""
    size = sizing(plan)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": APP, "labels": pod_labels()},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": APP},
            "minReplicas": MIN_REPLICAS,
            "maxReplicas": MAX_REPLICAS,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": QUEUE_METRIC},
                        "target": {"type": "AverageValue", "averageValue": str(QUEUE_TARGET_US)},
                    },
                },
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": CPU_TARGET_PERCENT},
                    },
                },
            ],
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": 0,
                    "policies": [{"type": "Pods", "value": 2, "periodSeconds": max(60, math.ceil(size.load_seconds))}],
                },
                "scaleDown": {
                    "stabilizationWindowSeconds": 300,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}],
                },
            },
        },
    }


def _online_entry_points(plan: RepositoryPlan) -> list[str]:
    """The entry points of online traffic: the `<name>`, `<name>_v<N>` and `<name>_rerank` ensembles (bulk
    `<name>_batch` requests share their models but wait behind them on purpose: not counted)."""
    return sorted(e.name for e in plan.ensembles() if e.role != "bulk")


WAIT_COMPUTE_COUNTERS = (
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
)
"""An ensemble's compute counters: the sum over its steps (Triton's ensemble statistics)."""


def prometheus_adapter_values(plan: RepositoryPlan) -> dict[str, Any]:
    """Helm values of prometheus-community/prometheus-adapter exposing QUEUE_METRIC per pod:
    the time the online entry points' requests waited, per request. Per ensemble, Triton counts
    the request's whole duration and its steps' compute: the difference is the time spent in
    the composing models' queues. The queues themselves cannot be used: the preprocessing and
    inference models are shared with `<name>_batch`, whose requests wait there on purpose."""
    entries = "|".join(_online_entry_points(plan))

    def rate(counter: str) -> str:
        return f'rate({counter}{{<<.LabelMatchers>>,model=~"{entries}"}}[2m])'

    waited = " - ".join(rate(c) for c in ("nv_inference_request_duration_us", *WAIT_COMPUTE_COUNTERS))
    numerator = f"sum by (<<.GroupBy>>) ({waited})"
    denominator = f"clamp_min(sum by (<<.GroupBy>>) ({rate('nv_inference_request_success')}), 0.001)"
    return {
        "rules": {
            "default": False,
            "custom": [
                {
                    "seriesQuery": 'nv_inference_request_duration_us{namespace!="",pod!=""}',
                    "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
                    "name": {"matches": "^nv_inference_request_duration_us$", "as": QUEUE_METRIC},
                    "metricsQuery": f"{numerator} / {denominator}",
                }
            ],
        }
    }


def kustomization(resources: list[str], **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": resources, **extra}


def _image_parts(reference: str) -> tuple[str, str]:
    name, _, tag = reference.rpartition(":")
    return name, tag


def volume_patch(plan: RepositoryPlan) -> dict[str, Any]:
    """Strategic-merge patch of the volume variant: the repository from PVC_NAME, read-only."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": APP},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "triton",
                            "volumeMounts": [{"name": "repository", "mountPath": "/models", "readOnly": True}],
                        }
                    ],
                    "volumes": [
                        {"name": "repository", "persistentVolumeClaim": {"claimName": PVC_NAME, "readOnly": True}}
                    ],
                }
            }
        },
    }


# --- files --------------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Block style; multi-line strings (the launcher) as literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _represent_str)


def dump(*documents: Mapping[str, Any], header: str) -> str:
    """YAML documents (key order kept) with a comment header."""
    body = "---\n".join(
        yaml.dump(
            dict(document), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100, allow_unicode=True
        )
        for document in documents
    )
    return "".join(f"# {line}\n".replace("# \n", "#\n") for line in header.splitlines()) + body


def file_header(plan: RepositoryPlan) -> str:
    """The comment every Kubernetes file starts with."""
    return (
        f"Generated by tritongen from the repository plan (target {plan.target.name}, {plan.cores} cores, "
        f"{len(plan.model_names())} models).\n"
        "Do not edit: patch it from a kustomize overlay outside the repository (`generate` replaces it)."
    )


def render_manifests(plan: RepositoryPlan, repository_files: Mapping[str, str]) -> dict[str, str]:
    """Repository-relative path -> text of every Kubernetes file for `plan` but KServe's.

    `repository_files` are the repository's other generated files (path -> text): their digest
    is the baked image's tag.
    """
    header = file_header(plan)
    tag = generation(plan, repository_files)
    server_name, server_tag = _image_parts(server_image(plan))
    base = f"{K8S_DIR}/base"
    files = {
        DEPLOYMENT_FILE: dump(deployment(plan, repository_files), header=header),
        f"{base}/service.yaml": dump(service(), header=header),
        f"{base}/pdb.yaml": dump(pod_disruption_budget(), header=header),
        f"{base}/hpa.yaml": dump(
            horizontal_pod_autoscaler(plan),
            header=header + f"\nThe pod metric {QUEUE_METRIC} comes from prometheus-adapter-values.yaml.",
        ),
        f"{base}/kustomization.yaml": dump(
            kustomization(
                ["deployment.yaml", "service.yaml", "pdb.yaml", "hpa.yaml"],
                labels=[{"pairs": {"app.kubernetes.io/part-of": APP}, "includeSelectors": False}],
            ),
            header=header
            + f"\nNeeds the Secret {SECRET_NAME} (key {SECRET_KEY}) in the namespace and the image {BAKED_IMAGE}:{tag}"
            + "\n(`tritongen bake`). See docs/kubernetes.md in tritongen.",
        ),
        f"{K8S_DIR}/overlays/example/kustomization.yaml": dump(
            kustomization(
                ["../../base"],
                namespace=APP,
                images=[{"name": BAKED_IMAGE, "newName": f"registry.example.com/{APP}/{BAKED_IMAGE}", "newTag": tag}],
                patches=[
                    {
                        "target": {"kind": "HorizontalPodAutoscaler", "name": APP},
                        "patch": '[{"op": "replace", "path": "/spec/maxReplicas", "value": 4}]',
                    }
                ],
            ),
            header=header + "\nAn example: copy this folder outside the repository, point `resources` at the base.",
        ),
        f"{K8S_DIR}/overlays/volume/kustomization.yaml": dump(
            kustomization(
                ["../../base"],
                images=[{"name": BAKED_IMAGE, "newName": server_name, "newTag": server_tag}],
                patches=[{"path": "repository-volume.yaml"}],
            ),
            header=header + f"\nThe server image without the repository; the repository from the PVC {PVC_NAME}.",
        ),
        f"{K8S_DIR}/overlays/volume/repository-volume.yaml": dump(volume_patch(plan), header=header),
        f"{K8S_DIR}/prometheus-adapter-values.yaml": dump(
            prometheus_adapter_values(plan),
            header=header
            + "\nHelm values for prometheus-community/prometheus-adapter: the HPA's queue-time metric per pod."
            + "\nAssumes Prometheus scrapes the pods (prometheus.io/* annotations) with `namespace` and `pod` labels.",
        ),
    }
    return dict(sorted(files.items()))


class Kubernetes(DeployOutput):
    """`deploy/k8s/`: the kustomize base, its overlays and the HPA's metric (Helm values)."""

    name = "kubernetes"

    def render(self, plan: RepositoryPlan, repository_files: Mapping[str, str]) -> dict[str, str]:
        return render_manifests(plan, repository_files)
