"""Stub processes of a running tritonserver (from /proc) and recovery of stubs that died.

The python backend of tritonserver 2.51 (r24.10) does not restart a stub process that died
(SIGKILL, OOM kill, segfault): every later request to that model instance fails with
"Stub process '<instance>' is not healthy" and the model still reports ready. The
`StubWatchdog` closes that gap: it watches the server's stubs in /proc and, when a ready
model has fewer live stubs than instances, reloads that model through the model-repository
API with its own config plus a `tritongen_restart` parameter (a changed config makes
Triton build a new model object next to the broken one and swap it in, like any reload).
Requests that reached the dead stub fail; requests after the swap succeed.

The replaced model object is never finalized by Triton once one of its stubs died (its
unload hangs; the server then needs its exit timeout to stop), so its surviving stubs
would stay resident forever: the watchdog kills them `leftover_grace_s` after the swap,
when the old object no longer gets requests.

A stub's command line is `stub <model dir>/<version>/<file> <shm region> <shm size>
<shm growth> <server pid> <backend lib dir> <ipc handle> <instance name> ...`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STUB_NAME = "triton_python_backend_stub"
RESTART_PARAMETER = "tritongen_restart"


@dataclass(frozen=True)
class StubProcess:
    """One live python backend stub of a server."""

    pid: int
    model: str
    instance: str


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def stub_processes(server_pid: int) -> list[StubProcess]:
    """The live (not zombie) stubs started by the tritonserver with pid `server_pid`."""
    stubs = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        args = _cmdline(int(entry.name))
        if len(args) > 8 and args[0].endswith(STUB_NAME) and args[5] == str(server_pid):
            pid = int(entry.name)
            if not _is_zombie(pid):
                stubs.append(StubProcess(pid, Path(args[1]).parent.parent.name, args[8]))
    return sorted(stubs, key=lambda s: s.pid)


def rss_kib(pid: int) -> int:
    """Resident memory of a process in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def instance_count(config: dict[str, Any]) -> int:
    """Instances of a model config (JSON form); 1 when no instance group is given."""
    groups = config.get("instance_group") or []
    return sum(int(group.get("count", 1)) for group in groups) or 1


def reload_model(client: Any, model: str, headers: dict[str, str], reason: str) -> None:
    """Reload `model` from a copy of its loaded config with a fresh restart marker."""
    config = client.get_model_config(model, headers=headers)
    config.setdefault("parameters", {})[RESTART_PARAMETER] = {"string_value": f"{time.time():.3f} {reason}"}
    client.load_model(model, headers=headers, config=json.dumps(config))


class StubWatchdog(threading.Thread):
    """Reload models whose stub died (see the module doc). Stop with `stop()`."""

    def __init__(
        self,
        server_pid: int,
        url: str,
        headers: dict[str, str],
        poll_s: float = 1.0,
        max_restarts: int = 5,
        window_s: float = 300.0,
        progress: Callable[[str], None] = print,
        leftover_grace_s: float = 5.0,
    ) -> None:
        super().__init__(name="tritongen-stub-watchdog", daemon=True)
        self.server_pid = server_pid
        self.url = url
        self.headers = headers
        self.poll_s = poll_s
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.progress = progress
        self.restarts: list[tuple[float, str, float]] = []
        """(time, model, seconds the reload took) of every recovery."""
        self._stop_event = threading.Event()
        self.watching = threading.Event()
        """Set once a round has recorded the live stubs: a stub that dies after it is noticed (one
        that died before is not: the watchdog compares rounds)."""
        self._seen: dict[str, set[int]] = {}
        self._suspect: dict[str, int] = {}
        self.leftover_grace_s = leftover_grace_s
        self._leftovers: list[tuple[float, str, set[int]]] = []
        """(when, model, pids): surviving stubs of replaced model objects, to kill after the grace."""

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)

    def run(self) -> None:
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(self.url, connection_timeout=300, network_timeout=300)
        try:
            while not self._stop_event.is_set():
                try:
                    self.check(client)
                    self.watching.set()
                except Exception as error:  # keep watching: the server may be busy or restarting
                    self.progress(f"watchdog: check failed: {error}")
                self._stop_event.wait(self.poll_s)
        finally:
            client.close()

    def check(self, client: Any) -> list[str]:
        """One round: returns the models reloaded."""
        self._kill_leftovers()
        alive: dict[str, set[int]] = {}
        for stub in stub_processes(self.server_pid):
            alive.setdefault(stub.model, set()).add(stub.pid)
        reloaded = []
        for model in sorted(set(self._seen) | set(alive)):
            pids = alive.get(model, set())
            dead = self._seen.get(model, set()) - pids
            if not dead and model not in self._suspect:
                self._seen[model] = pids
                continue
            expected = self._expected(client, model)
            if expected is None or len(pids) >= expected:
                self._suspect.pop(model, None)  # unloaded (by `tritongen update`), or replaced by a reload
                self._seen[model] = pids
                continue
            # Two rounds in a row below the instance count: not a reload or unload in progress.
            self._suspect[model] = self._suspect.get(model, 0) + 1
            if self._suspect[model] < 2:
                continue
            if self._recovered(client, model, sorted(dead)):
                reloaded.append(model)
                self._leftovers.append((time.monotonic() + self.leftover_grace_s, model, pids))
            self._suspect.pop(model, None)
            self._seen[model] = {s.pid for s in stub_processes(self.server_pid) if s.model == model}
        return reloaded

    def _kill_leftovers(self) -> None:
        now = time.monotonic()
        due = [entry for entry in self._leftovers if entry[0] <= now]
        self._leftovers = [entry for entry in self._leftovers if entry[0] > now]
        for _when, model, pids in due:
            live = {s.pid for s in stub_processes(self.server_pid) if s.model == model} & pids
            for pid in sorted(live):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if live:
                self.progress(f"watchdog: {model}: killed {len(live)} stub(s) of the replaced model object")
            self._seen[model] = self._seen.get(model, set()) - live

    def _expected(self, client: Any, model: str) -> int | None:
        """Instances of the loaded `model`; None when it is not loaded (an update unloaded it, or
        is replacing it): asked only then, so not a config request for a model that is gone (404)."""
        from tritonclient.utils import InferenceServerException

        try:
            if not client.is_model_ready(model):
                return None
            # Asked again each time: an update may have changed the instance count.
            return instance_count(client.get_model_config(model, headers=self.headers))
        except InferenceServerException:
            return None  # unloaded between the two requests

    def _recovered(self, client: Any, model: str, dead: list[int]) -> bool:
        now = time.monotonic()
        recent = [r for r in self.restarts if r[1] == model and now - r[0] < self.window_s]
        if len(recent) >= self.max_restarts:
            self.progress(
                f"watchdog: {model}: {len(recent)} restarts in {self.window_s:.0f}s, not restarting again "
                "(fix the model, then `tritongen update`)"
            )
            return False
        self.progress(f"watchdog: stub of {model} died (pid {', '.join(map(str, dead))}): reloading {model}")
        try:
            reload_model(client, model, self.headers, "stub died")
        except Exception as error:
            self.progress(f"watchdog: reloading {model} FAILED: {error}")
            self.restarts.append((now, model, -1.0))
            return False
        self.restarts.append((now, model, time.monotonic() - now))
        self.progress(f"watchdog: {model} reloaded in {time.monotonic() - now:.1f}s")
        return True
