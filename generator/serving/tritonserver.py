"""The embedded tritonserver: locate it, assemble its backend folder, run it with timeouts.

The `nvidia-pytriton` wheel bundles a real tritonserver 2.51 with only the python backend.
Its own backend folder lacks a stub, so `assemble_backend_directory` builds one (see
../shared/FACTS.md): `python/` with a *copy* of `libtriton_python.so` (a symlink is refused),
a *symlink* to the stub of the server's Python (the stub's RPATH is relative to its original
location) and `triton_python_backend_utils.py`; next to it, every Python-based backend of the
project's `backends/triton/` folder (`<name>/model.py`), each with a copy of the modules the
runners share (`backends/triton/*.py`, e.g. the batching core).

This one function is shared by `tritongen serve`, the integration tests and the container
image build, so that all three serve the repository with the same backend folder.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from generator import PROJECT_ROOT  # noqa: E402
from generator.errors import TritongenError

PYTHON_BACKENDS_DIR = PROJECT_ROOT / "backends" / "triton"
PREPROCESSING_PACKAGES = (PROJECT_ROOT / "backends" / "textprep",)
"""Source folders of the preprocessing packages, importable by stubs without an environment."""
STUB_PYTHON = "3.11"
"""Python minor version of the stub the embedded server uses (the project's Python)."""
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS")
"""Thread-pool sizes set to 1 in every stub (the backends size their own pools from configs)."""
RESTRICTED_APIS = ("model-repository", "model-config", "shared-memory", "statistics", "trace", "logging")
"""APIs that need the admin key (HTTP and gRPC); clients keep inference, health and metadata."""
ADMIN_HEADER = "admin-key"
"""HTTP header carrying the admin key."""
GRPC_ADMIN_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"
"""gRPC metadata key carrying the admin key (Triton prefixes the configured key)."""
MANIFEST_FILE = "tritongen-manifest.json"
"""generator.pipeline.plan.MANIFEST_FILE (this module is also run alone, in image builds)."""
ADMIN_KEY_PATTERN = re.compile(r"^[A-Za-z0-9._~-]{16,256}$")


class TritonServerError(TritongenError, RuntimeError):
    """The server could not be found, started, or did not become ready."""


@dataclass(frozen=True)
class TritonInstall:
    """Where the pieces of the embedded tritonserver live."""

    root: Path
    """`<site-packages>/pytriton/tritonserver`."""

    @property
    def server_binary(self) -> Path:
        return self.root / "bin" / "tritonserver"

    @property
    def python_backend_library(self) -> Path:
        return self.root / "backends" / "python" / "libtriton_python.so"

    @property
    def python_backend_utils(self) -> Path:
        return self.root / "backends" / "python" / "triton_python_backend_utils.py"

    def stub(self, python_minor: str = STUB_PYTHON) -> Path:
        return self.root / "python_backend_stubs" / python_minor / "triton_python_backend_stub"

    @property
    def libs_dir(self) -> Path:
        """The wheel's bundled shared libraries (`nvidia_pytriton.libs`)."""
        return self.root.parent.parent / "nvidia_pytriton.libs"


def find_triton() -> TritonInstall:
    """Locate the tritonserver bundled with the installed `nvidia-pytriton` wheel."""
    try:
        import pytriton  # type: ignore[import-untyped]
    except ImportError as error:
        raise TritonServerError(
            "the embedded tritonserver needs the `nvidia-pytriton==0.7.0` wheel: pip install -e ."
        ) from error
    root = Path(pytriton.__file__).resolve().parent / "tritonserver"
    install = TritonInstall(root)
    for needed in (install.server_binary, install.python_backend_library, install.stub()):
        if not needed.exists():
            raise TritonServerError(f"incomplete nvidia-pytriton install: {needed} is missing")
    return install


def assemble_backend_directory(
    destination: Path,
    install: TritonInstall | None = None,
    python_backends: Path = PYTHON_BACKENDS_DIR,
    copy_stub: bool = False,
    backends: Sequence[str] | None = None,
    stub: Path | None = None,
) -> Path:
    """Create a `--backend-directory` for the embedded server at `destination`.

    `copy_stub=True` copies the stub instead of linking it; the copy then only works when
    placed at the same folder depth relative to `nvidia_pytriton.libs` (container images
    that install the wheel at the same layout do not need this). `backends` names the
    Python-based backends to include (default: every `<python_backends>/<name>/model.py`);
    `stub` is a file installed as `python/triton_python_backend_stub` instead of the server's
    stub (the container image's stub dispatcher).
    """
    install = install or find_triton()
    python_dir = destination / "python"
    if destination.exists():
        shutil.rmtree(destination)
    python_dir.mkdir(parents=True)
    shutil.copy2(install.python_backend_library, python_dir / "libtriton_python.so")
    if install.python_backend_utils.exists():
        shutil.copy2(install.python_backend_utils, python_dir / "triton_python_backend_utils.py")
    stub_target = python_dir / "triton_python_backend_stub"
    if stub is not None:
        shutil.copyfile(stub, stub_target)
        stub_target.chmod(0o755)
    elif copy_stub:
        shutil.copy2(install.stub(), stub_target)
    else:
        stub_target.symlink_to(install.stub())
    shared_modules = sorted(python_backends.glob("*.py"))
    if backends is not None:
        missing = [name for name in backends if not (python_backends / name / "model.py").is_file()]
        if missing:
            raise TritonServerError(f"no Python-based backend {missing} in {python_backends}")
    for backend in sorted(python_backends.iterdir()):
        if (backend / "model.py").is_file() and (backends is None or backend.name in backends):
            shutil.copytree(backend, destination / backend.name, ignore=_ignore_caches)
            # Modules shared by the runners (tritongen_batching.py): a Python-based backend's
            # folder is on its stub's sys.path, so each runner gets its own copy.
            for module in shared_modules:
                shutil.copy2(module, destination / backend.name / module.name)
    return destination


def _ignore_caches(_folder: str, names: list[str]) -> list[str]:
    return [name for name in names if name == "__pycache__"]


def server_environment(extra_pythonpath: Sequence[Path] = ()) -> dict[str, str]:
    """Environment for the server process.

    The stub links the system's `libpython3.11` and embeds Python with an *isolated* config
    (pybind11, `PyConfig_InitIsolatedConfig`): it ignores PYTHONPATH and finds its prefix by
    looking up `python3` on PATH (verified with 2.51). So this interpreter's bin folder goes
    first on PATH: models without an environment then import this venv's packages (numpy,
    onnxruntime, torch, tokenizers). Models with EXECUTION_ENV_PATH are unaffected: the
    environment's `bin/activate` puts its own `python3` first. PYTHONPATH is kept for tools
    only. Thread pools default to one thread per core in every process; the backends set
    their own counts from the model config, so the defaults here are 1.
    """
    env = dict(os.environ)
    interpreter_bin = Path(sys.executable).parent
    if (interpreter_bin / "python3").exists():
        env["PATH"] = os.pathsep.join([str(interpreter_bin), env.get("PATH", "")])
    paths = [str(p) for p in extra_pythonpath] + [p for p in sys.path if p.endswith("-packages")]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    # Explicit, not defaults: a shell's OMP_NUM_THREADS=16 must not reach every stub.
    for variable in THREAD_VARIABLES:
        env[variable] = "1"
    return env


@dataclass(frozen=True)
class ServerPorts:
    """Ports of a running server."""

    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


PORT_REGISTRY = Path("/tmp/tritongen-ports.json")
"""Ports handed out by `free_ports` on this machine, with the pid they were handed to (a fixed
path, not $TMPDIR: every process of the machine must see the same registry)."""


def free_ports(count: int = 3) -> list[int]:
    """`count` distinct TCP ports that nothing on this machine uses or is about to use.

    tritonserver cannot bind port 0 and report what it got, so its ports are chosen before it
    starts; "bind port 0, close, pass the number on" races with every other process. So:

    - ports come from below the kernel's ephemeral range (`ip_local_port_range`), which the
      kernel never hands out for port-0 binds or outgoing connections (the busiest source of
      surprise users on a machine running clients and servers);
    - every port handed out is recorded with the caller's pid in PORT_REGISTRY, under a file
      lock, and is not handed out again while that process lives: concurrent test sessions,
      benchmarks and `tune` runs never get the same port;
    - each port is bound once right before it is handed out (something else already on it).

    No retries: a port that is still taken when the server binds it is reported loudly by
    `wait_ready` (the server exits before it is ready, with its log).
    """
    low = _ephemeral_low()
    first, last = max(1024, low - 12000), low - 1
    with _port_registry() as reserved:
        alive = {port: pid for port, pid in reserved.items() if _pid_alive(pid)}
        reserved.clear()
        reserved.update(alive)
        span = last - first + 1
        start = first + (os.getpid() * 97) % span
        chosen: list[int] = []
        for offset in range(span):
            port = first + (start - first + offset) % span
            if port not in reserved and _bindable(port):
                chosen.append(port)
                reserved[port] = os.getpid()
                if len(chosen) == count:
                    return chosen
    raise TritonServerError(f"no {count} free ports in {first}-{last} (ports held: {len(reserved)})")


def _ephemeral_low() -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    return 32768


def _bindable(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _port_registry() -> Iterator[dict[int, int]]:
    """The registry's port -> pid map, read and written back under an exclusive lock."""
    import fcntl
    import json

    with PORT_REGISTRY.with_suffix(".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data = json.loads(PORT_REGISTRY.read_text(encoding="utf-8"))
            reserved = {int(port): int(pid) for port, pid in data.items()}
        except (OSError, ValueError, AttributeError):
            reserved = {}
        yield reserved
        partial = PORT_REGISTRY.with_name(f".{PORT_REGISTRY.name}.{os.getpid()}")
        partial.write_text(json.dumps({str(p): pid for p, pid in sorted(reserved.items())}), encoding="utf-8")
        os.replace(partial, PORT_REGISTRY)


@dataclass
class ServerOptions:
    """How to launch tritonserver over a model repository."""

    repository: Path
    ports: ServerPorts = field(default_factory=ServerPorts)
    address: str = "127.0.0.1"
    models: Sequence[str] = ()
    """Models to load at start-up (explicit model-control mode); empty: every model folder of the
    repository when it is readable here, else `*`."""
    log_verbose: int = 0
    extra_args: Sequence[str] = ()
    admin_key: str | None = None
    """Key required by the RESTRICTED_APIS (header ADMIN_HEADER); None leaves them open."""
    strict_readiness: bool = True
    """`/v2/health/ready` only when every model loaded; False: ready once serving."""
    cpu_budget: int | None = None
    """Cores of the rate limiter's `cpu` resource when the repository's models use it
    (default: the manifest's `rate_limit_cores`)."""
    settings: ServerSettings | None = None
    """What the repository asks of the server; None: read from its manifest (a local folder)."""


@dataclass(frozen=True)
class ServerSettings:
    """What a generated repository asks of the server that runs it (facts of its plan)."""

    rate_limit_cores: int | None = None
    """`--rate-limit=execution_count --rate-limit-resource=cpu:<cores>`; None: limiter off."""
    model_load_threads: int | None = None
    """`--model-load-thread-count` (models loaded in parallel); None: Triton's default, 4."""
    backend_configs: tuple[str, ...] = ()
    """`--backend-config` values, `backend,setting=value` (the `ngc` target's shared pools)."""

    def flags(self) -> list[str]:
        """The tritonserver flags, in a fixed order."""
        flags = []
        if self.rate_limit_cores:
            flags += ["--rate-limit=execution_count", f"--rate-limit-resource=cpu:{self.rate_limit_cores}"]
        if self.model_load_threads:
            flags.append(f"--model-load-thread-count={self.model_load_threads}")
        return flags + [f"--backend-config={value}" for value in self.backend_configs]


def check_admin_key(key: str) -> str:
    """Return `key` if it is usable in Triton's restriction flags, else raise."""
    if not ADMIN_KEY_PATTERN.fullmatch(key):
        raise TritonServerError(
            "the admin key must be 16-256 characters of letters, digits and . _ ~ - "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return key


def admin_headers(key: str | None, protocol: str = "http") -> dict[str, str]:
    """Request headers (HTTP) or metadata (gRPC) that carry the admin key."""
    if key is None:
        return {}
    return {ADMIN_HEADER if protocol == "http" else GRPC_ADMIN_HEADER: key}


def repository_models(repository: Path) -> list[str]:
    """Model folders (with a config.pbtxt) of a local repository; other folders such as the
    shared `_envs/` are not models and must not be loaded."""
    if not repository.is_dir():
        return []
    return sorted(p.parent.name for p in repository.glob("*/config.pbtxt"))


def rate_limited(repository: Path) -> bool:
    """True if the repository's manifest says models use the rate limiter's `cpu` resource."""
    return manifest_settings(repository).rate_limit_cores is not None


def manifest_settings(repository: Path) -> ServerSettings:
    """The server settings a local repository's manifest records (none without a manifest)."""
    import json

    with contextlib.suppress(OSError, ValueError, AttributeError):
        manifest = json.loads((repository / MANIFEST_FILE).read_text(encoding="utf-8"))
        return ServerSettings(
            manifest.get("rate_limit_cores"),
            manifest.get("model_load_threads"),
            tuple(manifest.get("backend_configs", ())),
        )
    return ServerSettings()


def server_command(options: ServerOptions, backend_directory: Path, install: TritonInstall | None = None) -> list[str]:
    """The tritonserver command line for `options`."""
    install = install or find_triton()
    command = [
        str(install.server_binary),
        f"--model-repository={options.repository}",
        f"--backend-directory={backend_directory}",
        f"--http-address={options.address}",
        f"--http-port={options.ports.http}",
        f"--grpc-address={options.address}",
        f"--grpc-port={options.ports.grpc}",
        f"--metrics-address={options.address}",
        f"--metrics-port={options.ports.metrics}",
        "--allow-metrics=true",
        "--allow-gpu-metrics=false",
        "--model-control-mode=explicit",
        f"--strict-readiness={'true' if options.strict_readiness else 'false'}",
        "--exit-on-error=false",
        f"--log-verbose={options.log_verbose}",
    ]
    if options.admin_key is not None:
        restriction = f"{','.join(RESTRICTED_APIS)}:{ADMIN_HEADER}={check_admin_key(options.admin_key)}"
        command += [f"--http-restricted-api={restriction}", f"--grpc-restricted-protocol={restriction}"]
    settings = options.settings or manifest_settings(options.repository)
    if options.cpu_budget and settings.rate_limit_cores:
        settings = replace(settings, rate_limit_cores=options.cpu_budget)
    command += settings.flags()
    models = options.models or repository_models(options.repository)
    if models:
        command += [f"--load-model={name}" for name in models]
    else:
        command.append("--load-model=*")
    command += list(options.extra_args)
    return command


class TritonProcess:
    """A running tritonserver child process with its log file."""

    def __init__(self, process: subprocess.Popen[bytes], log_path: Path, options: ServerOptions):
        self.process = process
        self.log_path = log_path
        self.options = options

    @property
    def http_url(self) -> str:
        return f"{self.options.address}:{self.options.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"{self.options.address}:{self.options.ports.grpc}"

    def admin_headers(self, protocol: str = "http") -> dict[str, str]:
        """Headers that authorize the restricted APIs of this server (empty when open)."""
        return admin_headers(self.options.admin_key, protocol)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def is_ready(self) -> bool:
        url = f"http://{self.http_url}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def wait_ready(
        self,
        timeout_s: float = 180.0,
        poll_s: float = 0.5,
        allow_failed: bool = False,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        """Wait until every model loaded and the server is ready, or raise with the log.

        `allow_failed=True` returns once start-up finished even if some models failed to
        load (see `failed_models`); the server then serves the others. `progress` gets a
        line every few seconds (models loaded so far).
        """
        started = time.monotonic()
        deadline = started + timeout_s
        expected = len(self.options.models or repository_models(self.options.repository)) or "?"
        reported = started
        while time.monotonic() < deadline:
            if progress is not None and time.monotonic() - reported >= 5:
                reported = time.monotonic()
                loaded = self.log_text().count("successfully loaded '")
                progress(f"  loading: {loaded}/{expected} models ready after {reported - started:.0f}s")
            if self.process.poll() is not None:
                raise TritonServerError(
                    f"tritonserver exited with code {self.process.returncode} before it was "
                    f"ready; load errors:\n{load_errors(self.log_text()) or self.log_tail()}"
                )
            if self.is_ready():
                return
            failed = load_errors(self.log_text())
            if failed and _startup_finished(self.log_text()):
                if allow_failed:
                    return
                raise TritonServerError(f"models failed to load:\n{failed}")
            time.sleep(poll_s)
        stuck = ", ".join(still_loading(self.log_text())) or "none"
        raise TritonServerError(
            f"tritonserver not ready after {timeout_s:.0f}s (a stub that cannot start can hang "
            f"loading); models still loading: {stuck}; log tail:\n{self.log_tail()}"
        )

    def stop(self, timeout_s: float = 30.0) -> int:
        """Stop the server (SIGTERM, then SIGKILL) and return its exit code."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        return self.process.returncode


def still_loading(log: str) -> list[str]:
    """Models whose load started but neither succeeded nor failed (from a server log)."""
    started = re.findall(r'"loading: ([A-Za-z0-9_.-]+):\d+"', log)
    finished = set(re.findall(r"successfully loaded '([A-Za-z0-9_.-]+)'", log))
    finished |= set(re.findall(r"failed to load '([A-Za-z0-9_.-]+)'", log))
    return sorted(set(started) - finished)


def start_ready_server(options: ServerOptions, workdir: Path, ready_timeout_s: float = 300.0) -> TritonProcess:
    """Start tritonserver and wait until every model is ready; stop it and raise otherwise.

    No restart: a start that hangs is a failure, reported with the models still loading, the
    state of every stub process (what it waits on) and the log tail.
    """
    server = start_server(options, workdir)
    try:
        server.wait_ready(ready_timeout_s)
    except TritonServerError as error:
        stubs = stub_states(server.process.pid)
        server.stop()
        raise TritonServerError(f"{error}\nstub processes when it gave up:\n{stubs or '  none'}") from error
    return server


def stub_states(server_pid: int) -> str:
    """One line per python-backend stub of a server: pid, model, scheduler state, kernel wait
    channel (a stub that never reports `initialize` back shows here what it is blocked in)."""
    lines = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if len(args) <= 8 or not args[0].endswith("triton_python_backend_stub") or args[5] != str(server_pid):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            wchan = (entry / "wchan").read_text().strip() or "-"
            threads = len(list((entry / "task").iterdir()))
        except OSError:
            continue
        lines.append(f"  pid {entry.name} {args[8]} ({args[1]}): state {state}, wchan {wchan}, {threads} threads")
    return "\n".join(sorted(lines))


def failed_models(log: str) -> dict[str, str]:
    """Model name -> first line of its load error, for every model whose last load failed."""
    failed: dict[str, str] = {}
    for line in log.splitlines():
        loaded = _LOADED.search(line)
        if loaded:
            failed.pop(loaded.group(1), None)
            continue
        match = _FAILED.search(line)
        if match:
            failed[match.group(1)] = match.group(2).split("\\n")[0].strip().rstrip('"')
    return failed


_FAILED = re.compile(r"failed to load '([^']+)' version \d+: (.*)")
_LOADED = re.compile(r"successfully loaded '([^']+)'")


def load_errors(log: str) -> str:
    """Lines of a tritonserver log that report a model that failed to load."""
    markers = ("failed to load", "UNAVAILABLE: ", "Internal: ", "Invalid argument")
    return "\n".join(line for line in log.splitlines() if any(m in line for m in markers))


def _startup_finished(log: str) -> bool:
    """True once the server printed its model table (every model has a final state)."""
    return (
        "Started HTTPService" in log
        or "Started GRPCInferenceService" in log
        or ("+-------" in log and "| Model" in log)
    )


def _terminate_with_parent() -> None:
    """In the child before exec: get SIGTERM when the starting process dies (Linux), so that a
    killed `tritongen serve` or test run never leaves an orphaned server behind."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


LOCAL_STUB_DISPATCHER = """#!/bin/bash
# tritongen serve: the python backend's default stub for the embedded server. It runs the stub
# of the Python first on PATH: the model's execution environment (which the python backend
# activates first: NVIDIA's stub Python 3.10 for the shipped environments), or, without one,
# the server's own Python (this project's virtual environment: the Python-based runners).
python="$(command -v python3)"
for dir in "$(dirname "$python")"/../lib/python3.*; do
    stub="@STUBS@/${dir##*/python}/triton_python_backend_stub"
    if [[ -x "$stub" ]]; then
        exec "$stub" "$@"
    fi
done
exec "@DEFAULT@" "$@"
"""


def local_stub_dispatcher(install: TritonInstall) -> str:
    """The embedded server's `python/triton_python_backend_stub` (a stub per environment Python)."""
    stubs = install.root / "python_backend_stubs"
    return LOCAL_STUB_DISPATCHER.replace("@STUBS@", str(stubs)).replace("@DEFAULT@", str(install.stub()))


def start_server(
    options: ServerOptions,
    workdir: Path,
    python_backends: Path = PYTHON_BACKENDS_DIR,
    extra_pythonpath: Sequence[Path] = PREPROCESSING_PACKAGES,
    log_path: Path | None = None,
) -> TritonProcess:
    """Assemble a backend folder in `workdir` and start tritonserver (not yet ready); the log
    goes to `log_path` (default `<workdir>/tritonserver.log`)."""
    install = find_triton()
    workdir.mkdir(parents=True, exist_ok=True)
    dispatcher = workdir / "triton_python_backend_stub"
    dispatcher.write_text(local_stub_dispatcher(install))
    backend_directory = assemble_backend_directory(workdir / "backends", install, python_backends, stub=dispatcher)
    log_path = log_path or workdir / "tritonserver.log"
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        server_command(options, backend_directory, install),
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=server_environment(extra_pythonpath),
        start_new_session=True,
        preexec_fn=_terminate_with_parent,
    )
    log_file.close()
    return TritonProcess(process, log_path, options)


@contextlib.contextmanager
def running_server(options: ServerOptions, workdir: Path, ready_timeout_s: float = 180.0) -> Iterator[TritonProcess]:
    """Start tritonserver, wait for readiness, yield it, and always stop it."""
    server = start_server(options, workdir)
    try:
        server.wait_ready(ready_timeout_s)
        yield server
    finally:
        server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m generator.serving.tritonserver assemble DEST`: build a backend folder (image builds)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m generator.serving.tritonserver")
    parser.add_argument("action", choices=["assemble"])
    parser.add_argument("destination", type=Path)
    parser.add_argument("--copy-stub", action="store_true", help="copy the stub, don't link it")
    parser.add_argument("--backend", action="append", help="include only these Python-based backends")
    parser.add_argument("--stub", type=Path, help="a file to install as python/triton_python_backend_stub")
    args = parser.parse_args(argv)
    assemble_backend_directory(args.destination, copy_stub=args.copy_stub, backends=args.backend, stub=args.stub)
    print(f"backend folder assembled at {args.destination}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
