"""The generated Deployment's pod, run for real in Docker, and a rolling update.

The repository `generate` wrote (with `deploy/k8s/`) is baked into its image by
`generator.containers.bake`; `tests/k8s_pod.py` turns the Deployment's container spec into a
container exactly as stated (image, args, env with the Secret's key, ports, limits, non-root
user, read-only root filesystem, capabilities, emptyDirs, probes). Checked: the startup,
readiness and liveness probes succeed within the stated budget, every entry point answers over
HTTP and gRPC, the admin APIs refuse a client without the Secret's key, the memory stays under
the limit, and `docker diff` shows nothing written outside the declared writable paths.

The rolling update runs two generations of the repository as two such pods behind a loopback
load balancer and replaces the old by the new as `maxUnavailable: 0` does, under traffic:
no request may fail.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from generator.base.launch import repository_models
from generator.containers.bake import DEPLOYMENT_FILE, LOCAL_SERVER_IMAGE, bake_image, read_bake_plan
from generator.pipeline.deploy import kubernetes as k8s
from generator.pipeline.generate import DEFAULT_SPECS, GenerateOptions, generate
from generator.pipeline.manifest import read_manifest
from tests.container_fixtures import docker_engine, triton_image  # noqa: F401  (fixtures)
from tests.dockerd import DockerEngine
from tests.k8s_pod import LoopbackBalancer, PodContainer, quantity_bytes, run_pod_container

from . import assertions
from .assertions import Target
from .restriction import check_admin_restricted

pytestmark = [pytest.mark.integration, pytest.mark.container]
TEXTS = ["How do plants make food?", "Solve 2x + 3 = 11", "Ünïcödé têxt 🚀"]
ANSWERS_PER_PHASE = 30
"""Requests answered through the balancer in each phase of the rolling update (old pod alone,
old and new pods, new pod alone) before the next step: the phases are counted, not timed."""


def _deployment(repository: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((repository / DEPLOYMENT_FILE).read_text())
    return document


def _pod(repository: Path) -> dict[str, Any]:
    pod: dict[str, Any] = _deployment(repository)["spec"]["template"]["spec"]
    return pod


@pytest.fixture(scope="module")
def client(docker_engine: DockerEngine) -> Iterator[Any]:  # noqa: F811
    import docker

    handle = docker.DockerClient(base_url=docker_engine.host)
    yield handle
    handle.close()


@pytest.fixture(scope="module")
def baked(docker_engine: DockerEngine, triton_image: str, generated_repository: Path, client: Any) -> Iterator[str]:  # noqa: F811
    """The generated repository baked into its image (FROM the test's server image); removed at
    the end (baking takes seconds; each generation's image holds a copy of the repository)."""
    assert (generated_repository / DEPLOYMENT_FILE).is_file(), "generate wrote no Kubernetes manifests"
    image = bake_image(generated_repository, docker_engine.host, server_image=triton_image, log=print)
    yield image
    _remove_image(client, image)


def _remove_image(client: Any, image: str) -> None:
    import docker.errors

    try:
        client.images.remove(image)
    except docker.errors.APIError as error:
        print(f"kept {image}: {error}")


@pytest.fixture(scope="module")
def admin_key() -> dict[str, dict[str, str]]:
    """The Secret the Deployment references, as the operator creates it."""
    return {k8s.SECRET_NAME: {k8s.SECRET_KEY: secrets.token_urlsafe(24)}}


def _start(pod: PodContainer) -> dict[str, float]:
    """Run the probes as the kubelet does: startup until it succeeds, then readiness and liveness."""
    seconds, failures = pod.probe("startupProbe").wait_success(pod.hopeless)
    stated = pod.probe("startupProbe")
    budget = stated.period_s * stated.failure_threshold
    print(f"startup probe succeeded after {seconds:.0f}s ({failures} failures, budget {budget:.0f}s)")
    assert pod.probe("readinessProbe").once() and pod.probe("livenessProbe").once()
    return {"ready_s": seconds, "budget_s": budget}


def _memory_cgroup(container: Any) -> tuple[Path, str]:
    """The container's memory cgroup folder and the name of its peak-usage file (v1 or v2)."""
    pid = int(container.attrs["State"]["Pid"])
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory") / path.lstrip("/"), "memory.max_usage_in_bytes"
    unified = next(line.split(":", 2)[2] for line in lines if line.startswith("0::"))
    folder = Path("/sys/fs/cgroup") / unified.lstrip("/")
    return folder, "memory.peak" if (folder / "memory.peak").exists() else "memory.current"


def _memory_report(pod: PodContainer, repository: Path) -> dict[str, Any]:
    """cgroup peak and per-process PSS (MiB) by role, for Measured in
    generator/pipeline/deploy/kubernetes.py and the formats' `memory_mib` (the preprocessing
    models are the manifest's: their names are content hashes)."""
    preprocessing = {name for name, entry in read_manifest(repository).models.items() if entry.role == "preprocess"}
    pod.container.reload()
    cgroup, peak_file = _memory_cgroup(pod.container)
    peak = int((cgroup / peak_file).read_text())
    roles: dict[str, list[float]] = {}
    for pid in (cgroup / "cgroup.procs").read_text().split():
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        pss = next(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:")) / 1024
        program = command[0].decode(errors="replace")
        model = command[1].decode(errors="replace") if len(command) > 1 else ""
        if program.endswith("tritonserver"):
            role = "server"
        elif "stub" in program:
            folder = Path(model).parent.parent.name if model.startswith("/models/") else model
            role = "preprocess" if folder in preprocessing else f"inference:{Path(model).suffix.lstrip('.')}"
        else:
            role = f"other:{Path(program).name}"
        roles.setdefault(role, []).append(round(pss, 1))
    usage = pod.container.exec_run(["/bin/sh", "-c", "du -sm /tmp /dev/shm"], user=f"{k8s.RUN_AS}").output.decode()
    totals = {role: round(sum(values)) for role, values in roles.items()}
    return {"peak_mib": round(peak / 2**20), "pss_mib_total": totals, "pss_mib": roles, "du_mib": usage.split()}


def _entry_points(target: Target, repository: Path) -> dict[str, tuple[list[str], dict[str, list[int]]]]:
    """Every ensemble (client entry point) of the repository -> its outputs and its inputs' dims,
    from model metadata."""
    http = assertions.client(target, "http")
    entries = {}
    for name in repository_models(repository):
        metadata = http.get_model_metadata(name)
        if metadata.get("platform") == "ensemble":
            inputs = {tensor["name"]: [int(d) for d in tensor["shape"]] for tensor in metadata["inputs"]}
            entries[name] = ([output["name"] for output in metadata["outputs"]], inputs)
    return entries


def _check_entry_points(target: Target, repository: Path) -> list[str]:
    entries = _entry_points(target, repository)
    assert len(entries) >= 10, entries
    for name, (outputs, inputs) in sorted(entries.items()):
        answers = {p: assertions.infer_entry_point(target, p, name, TEXTS, outputs, inputs) for p in ("http", "grpc")}
        for output in outputs:
            assert answers["http"][output].shape[0] == len(TEXTS), (name, output)
            if answers["http"][output].dtype.kind == "f":
                assert np.allclose(answers["http"][output], answers["grpc"][output], atol=1e-5), (name, output)
                assert np.isfinite(answers["http"][output]).all()
        if "EMBEDDING" in outputs:
            assert np.allclose(np.linalg.norm(answers["http"]["EMBEDDING"], axis=1), 1.0, atol=1e-3), name
    return sorted(entries)


def test_the_deployments_pod_runs_as_stated(
    client: Any, baked: str, generated_repository: Path, admin_key: dict[str, dict[str, str]]
) -> None:
    pod_spec = _pod(generated_repository)
    assert pod_spec["containers"][0]["image"] == baked
    with run_pod_container(client, pod_spec, admin_key) as pod:
        attrs = pod.container.attrs
        assert attrs["Config"]["User"] == f"{k8s.RUN_AS}:{k8s.RUN_AS}" and attrs["HostConfig"]["ReadonlyRootfs"]
        assert (
            attrs["HostConfig"]["CapDrop"] == ["ALL"] and "no-new-privileges:true" in attrs["HostConfig"]["SecurityOpt"]
        )
        try:
            timing = _start(pod)
        except AssertionError:
            print(pod.logs()[-8000:])
            raise
        target = Target(pod.url("http"), pod.url("grpc"))
        entries = _check_entry_points(target, generated_repository)
        print(f"entry points answering over HTTP and gRPC: {', '.join(entries)}")
        assertions.check_embeddings(target, "grpc", "minilm_embed")
        key = admin_key[k8s.SECRET_NAME][k8s.SECRET_KEY]
        check_admin_restricted(target.http_url, target.grpc_url, key)
        assert not any(key in value for value in pod.container.attrs["Config"]["Cmd"])
        report = _memory_report(pod, generated_repository)
        limit = pod.container.attrs["HostConfig"]["Memory"] / 2**20
        print(f"measured: load {timing['ready_s']:.0f}s, memory {json.dumps(report)}, limit {limit:.0f} MiB")
        assert pod.alive() and pod.container.attrs["State"]["OOMKilled"] is False
        # The emulation charges the /tmp emptyDir (disk on a node) to memory: leave it out.
        tmp_mib = int(report["du_mib"][report["du_mib"].index("/tmp") - 1])
        estimate = quantity_bytes(pod.spec["resources"]["limits"]["memory"]) / 2**20 / k8s.MEMORY_HEADROOM
        assert report["peak_mib"] - tmp_mib <= 1.25 * estimate, f"the footprint outgrew Measured ({estimate:.0f} MiB)"
        outside = pod.written_outside()
        assert outside == [], f"written outside the declared writable paths {pod.writable}: {outside}"


def test_the_volume_variant_serves_the_repository_from_a_claim(
    client: Any,
    triton_image: str,  # noqa: F811
    generated_repository: Path,
    admin_key: dict[str, dict[str, str]],
) -> None:
    """overlays/volume, as `kubectl kustomize` renders it: the server image without the
    repository, the repository from the PersistentVolumeClaim (here a read-only bind of the
    generated folder)."""
    kubectl = Path(sys.executable).parent / "kubectl"
    command = [str(kubectl) if kubectl.exists() else "kubectl", "kustomize"]
    rendered = subprocess.run(
        [*command, str(generated_repository / k8s.K8S_DIR / "overlays/volume")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    deployment = next(d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment")
    pod_spec = deployment["spec"]["template"]["spec"]
    assert pod_spec["containers"][0]["image"] == LOCAL_SERVER_IMAGE
    pod_spec["containers"][0]["image"] = triton_image  # the same image under its content tag
    with run_pod_container(client, pod_spec, admin_key, claims={k8s.PVC_NAME: generated_repository}) as pod:
        mounts = {m["Destination"]: m["RW"] for m in pod.container.attrs["Mounts"]}
        assert mounts == {"/models": False}, mounts
        _start(pod)
        target = Target(pod.url("http"), pod.url("grpc"))
        entries = _check_entry_points(target, generated_repository)
        print(f"volume variant: {len(entries)} entry points answering")
        assert pod.written_outside() == [], pod.written_outside()


# --- rolling update --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def second_generation(
    tmp_path_factory: pytest.TempPathFactory, conda_channels: list[str], generated_repository: Path
) -> Path:
    """The next generation: the same specs with `text_classifier` switched to version 1."""
    specs = tmp_path_factory.mktemp("specs-v2") / "models"
    shutil.copytree(DEFAULT_SPECS, specs)
    path = specs / "text_classifier.yaml"
    spec = yaml.safe_load(path.read_text())
    assert spec["default_version"] != 1
    spec["default_version"] = 1
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    output = tmp_path_factory.mktemp("generation-2") / "repository"
    generate(GenerateOptions(specs_dir=specs, output=output, cores=2, channels=conda_channels))
    return output


def _classify(url: str, text: str, timeout_s: float = 60) -> str:
    body = {
        "inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": [text]}],
        "outputs": [{"name": "LOGITS"}],
    }
    request = urllib.request.Request(f"http://{url}/v2/models/text_classifier/infer", data=json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        answer = json.loads(response.read())
    logits = next(o for o in answer["outputs"] if o["name"] == "LOGITS")["data"]
    return ",".join(f"{value:.4f}" for value in logits)


class Traffic:
    """Clients sending requests through the balancer, one connection each, until stopped."""

    def __init__(self, url: str, workers: int = 2) -> None:
        self.url = url
        self.ok = 0
        self.failures: list[str] = []
        self.answers: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._answered = threading.Condition(self._lock)
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                answer = _classify(self.url, "What is 7 times 8?")
            except (urllib.error.URLError, OSError, ValueError, KeyError) as error:
                with self._lock:
                    self.failures.append(f"{time.strftime('%H:%M:%S')} {error}")
                time.sleep(0.05)
                continue
            with self._lock:
                self.ok += 1
                self.answers.append(answer)
                self._answered.notify_all()

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def answered_more(self, count: int, timeout_s: float = 120.0) -> None:
        """Wait until `count` more requests than now have been answered (fail after `timeout_s`)."""
        with self._answered:
            target = self.ok + count
            if not self._answered.wait_for(lambda: self.ok >= target or self._stop.is_set(), timeout_s):
                raise AssertionError(f"traffic: {self.ok - target + count} of {count} answers in {timeout_s:.0f}s")

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def __exit__(self, *_: object) -> None:
        self.stop()


def test_rolling_update_loses_no_request(
    client: Any,
    docker_engine: DockerEngine,  # noqa: F811
    triton_image: str,  # noqa: F811
    baked: str,
    generated_repository: Path,
    second_generation: Path,
    admin_key: dict[str, dict[str, str]],
) -> None:
    """Old pod serving behind the balancer; the new generation's pod starts and becomes ready;
    it joins the endpoints; the old one is removed from them while its preStop hook runs, then
    gets SIGTERM: zero failed requests, and the answers switch to the new generation."""
    newer = bake_image(second_generation, docker_engine.host, server_image=triton_image, log=print)
    assert newer != baked and read_bake_plan(second_generation).image == newer
    try:
        _roll(client, generated_repository, second_generation, admin_key)
    finally:
        _remove_image(client, newer)


def _roll(
    client: Any, generated_repository: Path, second_generation: Path, admin_key: dict[str, dict[str, str]]
) -> None:
    balancer = LoopbackBalancer()
    events: list[str] = []

    def event(text: str) -> None:
        events.append(f"{time.strftime('%H:%M:%S')} {text}")

    try:
        with run_pod_container(client, _pod(generated_repository), admin_key) as old:
            _start(old)
            before = _classify(old.url("http"), "What is 7 times 8?")
            balancer.set_endpoints([("127.0.0.1", old.ports["http"])])
            with Traffic(balancer.url) as traffic:
                event("traffic through the balancer to the old pod")
                traffic.answered_more(ANSWERS_PER_PHASE)
                with run_pod_container(client, _pod(second_generation), admin_key) as new:
                    event("new pod created")
                    _start(new)  # maxSurge 1: the new pod is ready before the old one goes
                    after = _classify(new.url("http"), "What is 7 times 8?")
                    balancer.set_endpoints([("127.0.0.1", old.ports["http"]), ("127.0.0.1", new.ports["http"])])
                    event("new pod ready: endpoints old + new")
                    traffic.answered_more(ANSWERS_PER_PHASE)
                    # Termination: endpoints drop the old pod a moment after its preStop hook starts.
                    only_new = [("127.0.0.1", new.ports["http"])]
                    timer = threading.Timer(1.0, lambda: (balancer.set_endpoints(only_new), event("endpoints: new")))
                    event("old pod terminating (preStop)")
                    timer.start()
                    code = old.terminate(before_sigterm=lambda: event("old pod: SIGTERM"))
                    timer.join()
                    event(f"old pod exited ({code})")
                    traffic.answered_more(ANSWERS_PER_PHASE)
                    traffic.stop()  # before the new pod goes away with this block
                    event("traffic stopped")
                    served = traffic.ok
            print(
                f"rolling update: {traffic.ok} requests answered, {len(traffic.failures)} failed; connections "
                f"per endpoint {balancer.connections}; refused {balancer.refused[:5]}\n  " + "\n  ".join(events)
            )
            assert served > 20
    finally:
        balancer.close()
    assert traffic.failures == [], traffic.failures[:10]
    assert before != after, "the two generations answer alike: the update is not observable"
    assert traffic.answers[0] == before and traffic.answers[-1] == after
    assert set(traffic.answers) == {before, after}
