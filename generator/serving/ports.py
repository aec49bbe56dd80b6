"""Ports for servers that cannot bind port 0 and report what they got.

Ports are handed out from below the kernel's ephemeral range and recorded, with the pid they
were handed to, in a registry every process of the machine shares.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from generator.base.triton import TritonServerError

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
    `TritonProcess.wait_ready` (the server exits before it is ready, with its log).
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
