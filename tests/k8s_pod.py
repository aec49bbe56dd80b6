"""A pod's container, run in a local Docker engine exactly as its manifest states (no cluster).

`run_pod_container(client, pod_spec, secrets)` turns the first container of a pod spec into a
Docker container field by field, and refuses any field it does not translate (so a manifest
change cannot be silently ignored):

- `image`, `command`, `args`: image, entrypoint (the image's when absent), cmd, with `$(VAR)`
  expanded as the kubelet does;
- `env` (`value`, `valueFrom.secretKeyRef`): environment, secrets from the test's Secret;
- `ports`: published on 127.0.0.1 (random host ports);
- `resources.limits`: `--cpus`, `--memory` (no swap);
- pod `securityContext` (`runAsUser`, `runAsGroup`, `fsGroup`, `runAsNonRoot`, seccomp
  `RuntimeDefault`): `--user`, `--group-add`, refused when root, the engine's default profile;
- container `securityContext`: `--read-only`, `--cap-drop`, `no-new-privileges`, not privileged;
- `emptyDir` mounts (memory or disk): tmpfs of `sizeLimit`, mode 0777 as the kubelet makes them;
- `persistentVolumeClaim` mounts: bind mounts of the test's folders (read-only when stated);
- probes (`httpGet`), `lifecycle.preStop.exec`, `terminationGracePeriodSeconds`: `Probe`,
  `PodContainer.terminate`.

Deviation: a disk `emptyDir` is a tmpfs here, charged to the container's memory, so its
`sizeLimit` is added to the memory limit (on a node it is disk and not charged to memory).
"""

from __future__ import annotations

import contextlib
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

POD_FIELDS = {
    "automountServiceAccountToken",
    "enableServiceLinks",
    "terminationGracePeriodSeconds",
    "securityContext",
    "containers",
    "volumes",
}
CONTAINER_FIELDS = {
    "name",
    "image",
    "imagePullPolicy",
    "command",
    "args",
    "env",
    "ports",
    "resources",
    "startupProbe",
    "readinessProbe",
    "livenessProbe",
    "lifecycle",
    "securityContext",
    "volumeMounts",
}
_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}
_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


class PodSpecError(AssertionError):
    """The manifest uses something this emulation does not translate, or that a kubelet refuses."""


def quantity_bytes(text: str) -> int:
    """A Kubernetes memory quantity (`640Mi`, `1G`, `1024`) in bytes."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i|[kMG])?", str(text))
    if not match:
        raise PodSpecError(f"unsupported quantity {text!r}")
    return int(float(match.group(1)) * _UNITS.get(match.group(2) or "", 1))


def quantity_cpus(text: str) -> float:
    """A Kubernetes CPU quantity (`2`, `500m`) in cores."""
    text = str(text)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def expand(text: str, env: Mapping[str, str]) -> str:
    """The kubelet's `$(VAR)` expansion: defined variables are replaced, `$$` is `$`, others stay."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _REFERENCE.sub(replace, text)


@dataclass(frozen=True)
class Probe:
    """An httpGet probe of the manifest, aimed at the container's published port."""

    kind: str
    url: str
    period_s: float
    timeout_s: float
    failure_threshold: int
    success_threshold: int = 1

    def once(self) -> bool:
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout_s) as response:
                return 200 <= int(response.status) < 400
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def wait_success(self, stop: Callable[[], str | None] | None = None) -> tuple[float, int]:
        """Run the probe every period until it succeeds; (seconds, failures before). Raises when
        it failed `failure_threshold` times in a row (the kubelet would restart the container),
        or as soon as `stop` gives a reason (the container exited, models failed to load)."""
        started = time.monotonic()
        failures = 0
        while True:
            if self.once():
                return time.monotonic() - started, failures
            failures += 1
            if failures >= self.failure_threshold:
                raise AssertionError(
                    f"{self.kind} failed {failures} times ({time.monotonic() - started:.0f}s): the kubelet "
                    "would restart the container"
                )
            reason = stop() if stop is not None else None
            if reason:
                raise AssertionError(f"{self.kind} gave up after {failures} failures: {reason}")
            time.sleep(self.period_s)


@dataclass
class PodContainer:
    """A running container made from a pod spec."""

    container: Any
    spec: dict[str, Any]
    pod: dict[str, Any]
    ports: dict[str, int]
    """Port name -> host port on 127.0.0.1."""
    writable: list[str] = field(default_factory=list)
    """Paths the manifest declares writable (its emptyDir and read-write volume mounts)."""

    @property
    def mount_points(self) -> list[str]:
        """Every volumeMount path (the engine creates missing mount points in the container's own
        filesystem, as a node's runtime does; they are not writes of the server)."""
        return [str(m["mountPath"]) for m in self.spec.get("volumeMounts", [])]

    def written_outside(self) -> list[tuple[str, str]]:
        """`docker diff` entries outside the writable paths, other than mount points."""
        writable = [w.rstrip("/") for w in self.writable]
        return [
            (kind, path)
            for kind, path in self.changes()
            if path not in self.mount_points and not any(path == w or path.startswith(w + "/") for w in writable)
        ]

    def url(self, port: str) -> str:
        return f"127.0.0.1:{self.ports[port]}"

    def probe(self, kind: str) -> Probe:
        stated = self.spec[kind]
        get = stated["httpGet"]
        port = get["port"]
        host_port = self.ports[port] if isinstance(port, str) else self._by_number(int(port))
        return Probe(
            kind=kind,
            url=f"http://127.0.0.1:{host_port}{get.get('path', '/')}",
            period_s=float(stated.get("periodSeconds", 10)),
            timeout_s=float(stated.get("timeoutSeconds", 1)),
            failure_threshold=int(stated.get("failureThreshold", 3)),
            success_threshold=int(stated.get("successThreshold", 1)),
        )

    def _by_number(self, number: int) -> int:
        for item in self.spec.get("ports", []):
            if int(item["containerPort"]) == number:
                return self.ports[item["name"]]
        raise PodSpecError(f"probe port {number} is not a container port")

    def alive(self) -> bool:
        self.container.reload()
        return self.container.status == "running"

    def hopeless(self) -> str | None:
        """Why waiting longer for readiness is pointless (exited, or models failed to load)."""
        if not self.alive():
            return f"the container exited ({self.container.attrs['State']['ExitCode']})"
        log = self.logs()
        if "Started HTTPService" in log and "failed to load" in log:
            failed = [line for line in log.splitlines() if "failed to load" in line and "version" in line]
            return "models failed to load:\n" + "\n".join(failed[:8])
        return None

    def logs(self) -> str:
        return bytes(self.container.logs()).decode(errors="replace")

    def changes(self) -> list[tuple[str, str]]:
        """`docker diff`: (kind, path) of everything written to the container's own filesystem."""
        kinds = {0: "C", 1: "A", 2: "D"}
        return [(kinds.get(int(c["Kind"]), "?"), str(c["Path"])) for c in self.container.diff() or []]

    def terminate(self, before_sigterm: Any = None) -> int:
        """Stop as the kubelet does: the preStop hook, then SIGTERM, SIGKILL after the grace period."""
        grace = int(self.pod.get("terminationGracePeriodSeconds", 30))
        started = time.monotonic()
        hook = self.spec.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
        if hook:
            self.container.exec_run(hook, user=self.container.attrs["Config"]["User"] or "")
        if before_sigterm is not None:
            before_sigterm()
        remaining = max(1, int(grace - (time.monotonic() - started)))
        self.container.stop(timeout=remaining)
        self.container.reload()
        return int(self.container.attrs["State"]["ExitCode"])


def _env(spec: dict[str, Any], secrets: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in spec.get("env", []):
        name = item["name"]
        if "value" in item:
            env[name] = expand(str(item["value"]), env)
            continue
        source = item.get("valueFrom", {})
        if set(source) != {"secretKeyRef"}:
            raise PodSpecError(f"env {name}: only value and valueFrom.secretKeyRef are emulated: {item}")
        ref = source["secretKeyRef"]
        secret = secrets.get(ref["name"])
        if secret is None or ref["key"] not in secret:
            if ref.get("optional"):
                continue
            raise PodSpecError(f"env {name}: Secret {ref['name']}/{ref['key']} missing (CreateContainerConfigError)")
        env[name] = secret[ref["key"]]
    return env


def _security(pod: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    pod_security = dict(pod.get("securityContext", {}))
    security = dict(spec.get("securityContext", {}))
    known_pod = {"runAsNonRoot", "runAsUser", "runAsGroup", "fsGroup", "seccompProfile"}
    known = {"allowPrivilegeEscalation", "privileged", "readOnlyRootFilesystem", "runAsNonRoot", "capabilities"}
    if set(pod_security) - known_pod or set(security) - known:
        raise PodSpecError(
            f"untranslated securityContext fields: {set(pod_security) - known_pod, set(security) - known}"
        )
    user = security.get("runAsUser", pod_security.get("runAsUser"))
    group = security.get("runAsGroup", pod_security.get("runAsGroup"))
    if (security.get("runAsNonRoot") or pod_security.get("runAsNonRoot")) and not user:
        raise PodSpecError("runAsNonRoot without a non-zero runAsUser: the kubelet checks the image's user")
    seccomp = pod_security.get("seccompProfile", {"type": "RuntimeDefault"})
    if seccomp.get("type") != "RuntimeDefault":
        raise PodSpecError(f"only the RuntimeDefault seccomp profile is emulated: {seccomp}")
    if security.get("privileged"):
        raise PodSpecError("privileged containers are not emulated")
    kwargs: dict[str, Any] = {"privileged": False, "read_only": bool(security.get("readOnlyRootFilesystem"))}
    if user is not None:
        kwargs["user"] = f"{user}:{group}" if group is not None else str(user)
    if "fsGroup" in pod_security:
        kwargs["group_add"] = [str(pod_security["fsGroup"])]
    capabilities = security.get("capabilities", {})
    if capabilities.get("drop"):
        kwargs["cap_drop"] = list(capabilities["drop"])
    if capabilities.get("add"):
        kwargs["cap_add"] = list(capabilities["add"])
    if security.get("allowPrivilegeEscalation") is False:
        kwargs["security_opt"] = ["no-new-privileges:true"]
    return kwargs


def _mounts(
    pod: dict[str, Any], spec: dict[str, Any], claims: Mapping[str, Path]
) -> tuple[list[Any], dict[str, str], list[str], int]:
    """(docker bind mounts, tmpfs mounts, writable paths, bytes of disk emptyDirs in memory).

    emptyDirs are tmpfs mounted as the kubelet does: writable by all (0777) and executable
    (Docker's own tmpfs default is noexec; the python backend maps libraries from /tmp)."""
    from docker.types import Mount

    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts: list[Any] = []
    tmpfs: dict[str, str] = {}
    writable: list[str] = []
    in_memory = 0
    for mount in spec.get("volumeMounts", []):
        volume = volumes.get(mount["name"])
        if volume is None:
            raise PodSpecError(f"volumeMount {mount['name']} has no volume")
        target = mount["mountPath"]
        read_only = bool(mount.get("readOnly", False))
        if "emptyDir" in volume:
            empty = volume["emptyDir"] or {}
            size = quantity_bytes(empty["sizeLimit"]) if "sizeLimit" in empty else None
            if empty.get("medium") not in (None, "", "Memory"):
                raise PodSpecError(f"emptyDir medium {empty.get('medium')} is not emulated")
            if empty.get("medium") != "Memory" and size is not None:
                in_memory += size
            options = ["ro" if read_only else "rw", "exec", "mode=0777"] + ([f"size={size}"] if size else [])
            tmpfs[target] = ",".join(options)
        elif "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]
            folder = claims.get(claim["claimName"])
            if folder is None:
                raise PodSpecError(f"no folder given for the claim {claim['claimName']}")
            read_only = read_only or bool(claim.get("readOnly"))
            mounts.append(Mount(target, str(folder.resolve()), type="bind", read_only=read_only))
        else:
            raise PodSpecError(f"volume {mount['name']}: only emptyDir and persistentVolumeClaim are emulated")
        if not read_only:
            writable.append(target)
    return mounts, tmpfs, writable, in_memory


def container_arguments(
    pod: dict[str, Any],
    secrets: Mapping[str, Mapping[str, str]],
    claims: Mapping[str, Path] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """(`docker.containers.run` keyword arguments, writable paths) for the pod's only container."""
    if set(pod) - POD_FIELDS:
        raise PodSpecError(f"untranslated pod fields: {sorted(set(pod) - POD_FIELDS)}")
    (spec,) = pod["containers"]
    if set(spec) - CONTAINER_FIELDS:
        raise PodSpecError(f"untranslated container fields: {sorted(set(spec) - CONTAINER_FIELDS)}")
    env = _env(spec, secrets)
    kwargs: dict[str, Any] = {"image": spec["image"], "environment": env, "detach": True}
    if "command" in spec:
        kwargs["entrypoint"] = [expand(a, env) for a in spec["command"]]
    if "args" in spec:
        kwargs["command"] = [expand(a, env) for a in spec["args"]]
    kwargs["ports"] = {
        f"{p['containerPort']}/{p.get('protocol', 'TCP').lower()}": ("127.0.0.1", None) for p in spec["ports"]
    }
    mounts, tmpfs, writable, in_memory = _mounts(pod, spec, claims or {})
    kwargs["mounts"] = mounts
    kwargs["tmpfs"] = tmpfs
    limits = spec.get("resources", {}).get("limits", {})
    if "cpu" in limits:
        kwargs["nano_cpus"] = int(quantity_cpus(limits["cpu"]) * 1e9)
    if "memory" in limits:
        kwargs["mem_limit"] = quantity_bytes(limits["memory"]) + in_memory
        kwargs["memswap_limit"] = kwargs["mem_limit"]  # no swap, as on a node
    kwargs.update(_security(pod, spec))
    return kwargs, writable


@contextlib.contextmanager
def run_pod_container(
    client: Any,
    pod: dict[str, Any],
    secrets: Mapping[str, Mapping[str, str]],
    claims: Mapping[str, Path] | None = None,
    name: str | None = None,
) -> Iterator[PodContainer]:
    """Start the pod's container; yield it; always remove it."""
    kwargs, writable = container_arguments(pod, secrets, claims)
    container = client.containers.run(name=name, labels={"tritongen.test": "k8s-pod"}, **kwargs)
    try:
        container.reload()
        published = container.attrs["NetworkSettings"]["Ports"]
        (spec,) = pod["containers"]
        ports = {
            p["name"]: int(published[f"{p['containerPort']}/{p.get('protocol', 'TCP').lower()}"][0]["HostPort"])
            for p in spec["ports"]
        }
        yield PodContainer(container, spec, pod, ports, writable)
    finally:
        with contextlib.suppress(Exception):
            container.remove(force=True)


class LoopbackBalancer:
    """A TCP load balancer on 127.0.0.1 standing in for a Service: each new connection goes to
    the next endpoint (round robin); removing an endpoint stops new connections to it while the
    open ones finish, as kube-proxy does for a terminating pod."""

    def __init__(self) -> None:
        import socket
        import threading

        self._lock = threading.Lock()
        self._endpoints: list[tuple[str, int]] = []
        self._next = 0
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(128)
        self.port = int(self._server.getsockname()[1])
        self.connections: dict[tuple[str, int], int] = {}
        self.refused: list[str] = []
        """`time endpoint error` of every connection an endpoint refused."""
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set_endpoints(self, endpoints: list[tuple[str, int]]) -> None:
        with self._lock:
            self._endpoints = list(endpoints)

    def _pick(self) -> tuple[str, int] | None:
        with self._lock:
            if not self._endpoints:
                return None
            endpoint = self._endpoints[self._next % len(self._endpoints)]
            self._next += 1
            self.connections[endpoint] = self.connections.get(endpoint, 0) + 1
            return endpoint

    def _accept(self) -> None:
        import threading

        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: Any) -> None:
        import socket
        import threading

        endpoint = self._pick()
        if endpoint is None:
            client.close()
            return
        try:
            upstream = socket.create_connection(endpoint, timeout=10)
        except OSError as error:
            with self._lock:
                self.refused.append(f"{time.strftime('%H:%M:%S')} {endpoint} {error}")
            client.close()
            return
        upstream.settimeout(None)

        def pump(source: Any, sink: Any) -> None:
            try:
                while data := source.recv(65536):
                    sink.sendall(data)
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    sink.shutdown(socket.SHUT_WR)

        back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
        back.start()
        pump(client, upstream)
        back.join()
        client.close()
        upstream.close()

    def close(self) -> None:
        self._closed = True
        self._server.close()
