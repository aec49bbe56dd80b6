"""Run the embedded tritonserver over a local repository: its command, environment and process.

`local_server_command` completes `server_command` with the settings the repository's manifest
records; `start_server` assembles the backend folder with the local stub dispatcher and starts
the server; `TritonProcess` waits for readiness (with the log's diagnosis when models fail or
hang) and stops it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from generator.base.launch import (
    THREAD_VARIABLES,
    ServerOptions,
    ServerSettings,
    admin_headers,
    repository_models,
    server_command,
)
from generator.base.triton import (
    PREPROCESSING_PACKAGES,
    PYTHON_BACKENDS_DIR,
    TritonInstall,
    TritonServerError,
    assemble_backend_directory,
    find_triton,
)
from generator.pipeline.manifest import find_manifest
from generator.serving.diagnostics import (
    load_errors,
    open_http_connections,
    startup_finished,
    still_loading,
    stub_states,
)

EXIT_TIMEOUT_S = 30
"""tritonserver's `--exit-timeout-secs` (its default; `server_command` keeps it). After SIGTERM
the server first waits, up to this long, for clients to close their HTTP connections (idle
keep-alive ones included: it keeps serving them meanwhile), then unloads every model in what is
left of it; with nothing left it exits at once, code 1 ("Exit timeout expired"), and the stubs
follow on their own (docs/facts.md, "Stopping")."""
UNLOAD_GRACE_S = 30.0
"""How long `TritonProcess.stop` waits beyond EXIT_TIMEOUT_S before SIGKILL: unloading every
model and finalizing the backends takes a few seconds (4-7 s for the shipped repository on 2
busy cores), and a server whose exit timeout ran out exits by itself."""


def manifest_settings(repository: Path) -> ServerSettings:
    """The server settings a local repository's manifest records (none without a manifest)."""
    manifest = find_manifest(repository)
    if manifest is None:
        return ServerSettings()
    return ServerSettings(manifest.rate_limit_cores, manifest.model_load_threads, tuple(manifest.backend_configs))


def rate_limited(repository: Path) -> bool:
    """True if the repository's manifest says models use the rate limiter's `cpu` resource."""
    return manifest_settings(repository).rate_limit_cores is not None


def local_server_command(
    options: ServerOptions, backend_directory: Path, install: TritonInstall | None = None
) -> list[str]:
    """`server_command` for a local repository: without `options.settings`, the settings its
    manifest records."""
    if options.settings is None:
        options = replace(options, settings=manifest_settings(options.repository))
    return server_command(options, backend_directory, install)


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
        return self._health("ready")

    def is_live(self) -> bool:
        """The HTTP endpoint answers (the server may still be loading or have failed models)."""
        return self._health("live")

    def _health(self, which: str) -> bool:
        url = f"http://{self.http_url}/v2/health/{which}"
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
            if failed and startup_finished(self.log_text()):
                if allow_failed:
                    if self.is_live():  # its log says the HTTP service started a moment earlier
                        return
                    time.sleep(poll_s)
                    continue
                raise TritonServerError(f"models failed to load:\n{failed}")
            time.sleep(poll_s)
        stuck = ", ".join(still_loading(self.log_text())) or "none"
        raise TritonServerError(
            f"tritonserver not ready after {timeout_s:.0f}s (a stub that cannot start can hang "
            f"loading); models still loading: {stuck}; log tail:\n{self.log_tail()}"
        )

    def stop(
        self, timeout_s: float = EXIT_TIMEOUT_S + UNLOAD_GRACE_S, progress: Callable[[str], None] | None = None
    ) -> int:
        """Stop the server and return its exit code: SIGTERM, then SIGKILL after `timeout_s`.

        The default outlasts the server's own exit timeout (EXIT_TIMEOUT_S), so the server
        always ends its own shutdown. `progress` is told once when that shutdown waits for
        clients to close their HTTP connections (a client that keeps one open makes the stop
        take the whole exit timeout).
        """
        if self.process.poll() is None:
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            told = progress is None
            while self.process.poll() is None and time.monotonic() < deadline:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
                waiting = None if told else open_http_connections(self._log_since(offset))
                if waiting is not None and progress is not None:
                    connections, seconds = waiting
                    progress(
                        f"  tritonserver waits for {connections} open HTTP connection(s) to close before it "
                        f"unloads the models (at most {seconds} s more): close the clients that hold them"
                    )
                    told = True
            if self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        return self.process.returncode

    def _log_since(self, offset: int) -> str:
        """The log written after `offset` bytes."""
        with contextlib.suppress(OSError), self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")
        return ""


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


def _terminate_with_parent() -> None:
    """In the child before exec: get SIGTERM when the starting process dies (Linux), so that a
    killed `tritongen serve` or test run never leaves an orphaned server behind."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_server(
    options: ServerOptions,
    workdir: Path,
    python_backends: Path = PYTHON_BACKENDS_DIR,
    extra_pythonpath: Sequence[Path] = PREPROCESSING_PACKAGES,
    log_path: Path | None = None,
) -> TritonProcess:
    """Assemble a backend folder in `workdir` and start tritonserver (not yet ready); the log
    goes to `log_path` (default `<workdir>/tritonserver.log`). Relative paths are made absolute:
    the python backend starts each stub from inside its unpacked environment."""
    install = find_triton()
    workdir = workdir.resolve()
    options = replace(options, repository=options.repository.resolve())
    workdir.mkdir(parents=True, exist_ok=True)
    dispatcher = workdir / "triton_python_backend_stub"
    dispatcher.write_text(local_stub_dispatcher(install))
    backend_directory = assemble_backend_directory(workdir / "backends", install, python_backends, stub=dispatcher)
    log_path = log_path or workdir / "tritonserver.log"
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        local_server_command(options, backend_directory, install),
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=server_environment(extra_pythonpath),
        start_new_session=True,
        preexec_fn=_terminate_with_parent,
    )
    log_file.close()
    return TritonProcess(process, log_path, options)


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


@contextlib.contextmanager
def running_server(options: ServerOptions, workdir: Path, ready_timeout_s: float = 180.0) -> Iterator[TritonProcess]:
    """Start tritonserver, wait for readiness, yield it, and always stop it."""
    server = start_server(options, workdir)
    try:
        server.wait_ready(ready_timeout_s)
        yield server
    finally:
        server.stop()
