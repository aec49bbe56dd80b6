"""What a tritonserver log and /proc say about its models and stubs (no server needed)."""

from __future__ import annotations

import re
from pathlib import Path

_FAILED = re.compile(r"failed to load '([^']+)' version \d+: (.*)")
_LOADED = re.compile(r"successfully loaded '([^']+)'")


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


def load_errors(log: str) -> str:
    """Lines of a tritonserver log that report a model that failed to load."""
    markers = ("failed to load", "UNAVAILABLE: ", "Internal: ", "Invalid argument")
    return "\n".join(line for line in log.splitlines() if any(m in line for m in markers))


def still_loading(log: str) -> list[str]:
    """Models whose load started but neither succeeded nor failed (from a server log)."""
    started = re.findall(r'"loading: ([A-Za-z0-9_.-]+):\d+"', log)
    finished = set(re.findall(r"successfully loaded '([A-Za-z0-9_.-]+)'", log))
    finished |= set(re.findall(r"failed to load '([A-Za-z0-9_.-]+)'", log))
    return sorted(set(started) - finished)


_HTTP_CONNECTIONS = re.compile(r"Timeout (\d+): Found (\d+) HTTP service connections")


def open_http_connections(log: str) -> tuple[int, int] | None:
    """(open connections, seconds left) of the last line in which a stopping tritonserver says it
    waits for clients to close their HTTP connections; None when it does not."""
    found = _HTTP_CONNECTIONS.findall(log)
    if not found:
        return None
    seconds, connections = found[-1]
    return int(connections), int(seconds)


def startup_finished(log: str) -> bool:
    """True once the server printed its model table (every model has a final state)."""
    return (
        "Started HTTPService" in log
        or "Started GRPCInferenceService" in log
        or ("+-------" in log and "| Model" in log)
    )


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
