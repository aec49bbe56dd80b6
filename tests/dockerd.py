"""A Docker engine for image builds and container tests: use the one that answers, or start one.

Machines without a running daemon but with Debian's `docker.io` installed get a private
`dockerd` (docs/facts.md, "Containers"): its data root is kept under
`build/dockerd/data` so that built images survive between runs (override with
`TRITONGEN_DOCKER_DATA_ROOT`); its socket, exec root and pid file live in a short temporary
folder. A started engine is recorded in `build/dockerd/engine.json` so that a second process
(another test run, `python -m generator.containers.image build`) reuses it instead of starting a second
daemon on the same data root.

CLI: `python -m tests.dockerd start|stop|status`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = PROJECT_ROOT / "build" / "dockerd"
DEFAULT_HOST = "unix:///var/run/docker.sock"
DOCKERD_FLAGS = ("--iptables=false", "--ip-forward=false", "--ip-masq=false")
"""No firewall changes: published ports go through docker-proxy."""


class DockerUnavailable(RuntimeError):
    """No Docker engine answers and none could be started (the message says why)."""


def docker_answers(host: str, timeout_s: float = 5.0) -> bool:
    """True when a Docker engine answers a ping at `host` (e.g. `unix:///path/docker.sock`)."""
    if host.startswith("unix://") and not Path(host.removeprefix("unix://")).exists():
        return False
    import docker
    import docker.errors
    import requests.exceptions

    try:
        client = docker.DockerClient(base_url=host, timeout=int(max(timeout_s, 1)))
    except docker.errors.DockerException:
        return False
    try:
        return bool(client.ping())
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError):
        return False
    finally:
        client.close()


@dataclass
class DockerEngine:
    """A Docker engine this process talks to; `owned` when this process started it."""

    host: str
    pid: int | None = None
    owned: bool = False
    run_dir: Path | None = None
    """Temporary folder with the socket, exec root and pid file of a started engine."""

    def environment(self) -> dict[str, str]:
        """Variables that point Docker clients (and testcontainers) at this engine."""
        return {"DOCKER_HOST": self.host}

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the engine if this process started it (SIGTERM, then SIGKILL)."""
        if not self.owned or self.pid is None:
            return
        _terminate(self.pid, timeout_s)
        _forget_state(self.pid)
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        self.owned = False


def _terminate(pid: int, timeout_s: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie child of ours is reaped and counts as gone)."""
    with contextlib.suppress(ChildProcessError):
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _state_file() -> Path:
    return STATE_DIR / "engine.json"


def _read_state() -> dict[str, object] | None:
    try:
        state = json.loads(_state_file().read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _forget_state(pid: int) -> None:
    state = _read_state()
    if state is not None and state.get("pid") == pid:
        _state_file().unlink(missing_ok=True)


@contextlib.contextmanager
def _state_lock() -> Iterator[None]:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with (STATE_DIR / "lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def find_engine() -> DockerEngine | None:
    """An engine that answers now: `$DOCKER_HOST`, the default socket, or the project's own."""
    candidates = [os.environ.get("DOCKER_HOST", ""), DEFAULT_HOST]
    state = _read_state()
    if state is not None and isinstance(state.get("host"), str):
        candidates.append(str(state["host"]))
    for host in dict.fromkeys(c for c in candidates if c):
        if docker_answers(host):
            pid = state.get("pid") if state is not None and state.get("host") == host else None
            return DockerEngine(host=host, pid=pid if isinstance(pid, int) else None)
    return None


def data_root() -> Path:
    """Where a started engine keeps images and containers (persistent, so images are reused)."""
    override = os.environ.get("TRITONGEN_DOCKER_DATA_ROOT")
    return Path(override) if override else STATE_DIR / "data"


def start_engine(timeout_s: float = 60.0) -> DockerEngine:
    """Start a private `dockerd` and wait until it answers; raise `DockerUnavailable` if not."""
    dockerd = shutil.which("dockerd") or next(
        (p for p in ("/usr/sbin/dockerd", "/usr/bin/dockerd") if Path(p).exists()), None
    )
    if dockerd is None:
        raise DockerUnavailable(
            "no Docker engine answers and `dockerd` is not installed "
            "(run tests/setup_system.sh, which installs Debian's docker.io)"
        )
    if os.geteuid() != 0:
        raise DockerUnavailable("no Docker engine answers and starting `dockerd` needs root")
    root = data_root()
    root.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="tgd-", dir="/tmp"))  # short: sockets max 107 chars
    host = f"unix://{run_dir / 'docker.sock'}"
    log_path = STATE_DIR / "dockerd.log"
    command = [
        dockerd,
        f"--data-root={root}",
        f"--exec-root={run_dir / 'exec'}",
        f"--host={host}",
        f"--pidfile={run_dir / 'docker.pid'}",
        *DOCKERD_FLAGS,
    ]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    engine = DockerEngine(host=host, pid=process.pid, owned=True, run_dir=run_dir)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise DockerUnavailable(f"dockerd exited with code {process.returncode}; log tail:\n{_tail(log_path)}")
        if docker_answers(host, timeout_s=2):
            _state_file().write_text(json.dumps({"host": host, "pid": process.pid}) + "\n")
            return engine
        time.sleep(0.2)
    engine.stop()
    raise DockerUnavailable(f"dockerd did not answer within {timeout_s:.0f}s:\n{_tail(log_path)}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def ensure_engine(timeout_s: float = 60.0) -> DockerEngine:
    """The engine that answers, or a newly started one (`owned=True`: the caller stops it)."""
    with _state_lock():
        engine = find_engine()
        if engine is not None:
            return engine
        return start_engine(timeout_s)


@contextlib.contextmanager
def docker_engine(timeout_s: float = 60.0) -> Iterator[DockerEngine]:
    """Yield an answering engine; stop it afterwards only if this call started it."""
    engine = ensure_engine(timeout_s)
    try:
        yield engine
    finally:
        engine.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m tests.dockerd start|stop|status`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.dockerd")
    parser.add_argument("action", choices=["start", "stop", "status"])
    args = parser.parse_args(argv)
    if args.action == "start":
        engine = ensure_engine()
        print(f"export DOCKER_HOST={engine.host}")
        return 0
    engine_found = find_engine()
    if args.action == "status":
        print(f"answering: {engine_found.host}" if engine_found else "no Docker engine answers")
        return 0 if engine_found else 1
    state = _read_state()
    pid = state.get("pid") if state else None
    if not isinstance(pid, int) or not _alive(pid):
        print("no project dockerd is running")
        _state_file().unlink(missing_ok=True)
        return 0
    host = state.get("host") if state else None
    run_dir = Path(str(host).removeprefix("unix://")).parent if isinstance(host, str) else None
    DockerEngine(host=str(host), pid=pid, owned=True, run_dir=run_dir).stop()
    print(f"stopped dockerd (pid {pid})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
