"""Port allocation for servers that cannot bind port 0 themselves (no server started)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from generator.serving import ports


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ports.json"
    monkeypatch.setattr(ports, "PORT_REGISTRY", path)
    return path


def test_ports_are_distinct_bindable_below_the_ephemeral_range_and_recorded(registry: Path) -> None:
    first = ports.free_ports(3)
    second = ports.free_ports(3)
    assert len(set(first + second)) == 6, "a port was handed out twice"
    low = ports._ephemeral_low()
    assert all(1024 <= port < low for port in first + second)
    recorded = json.loads(registry.read_text())
    assert {int(port) for port in recorded} == set(first + second)
    for port in first:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_ports_of_a_process_that_ended_are_handed_out_again(registry: Path) -> None:
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(ended.stdout)
    low = ports._ephemeral_low()
    everything = range(max(1024, low - 12000), low)
    registry.write_text(json.dumps({str(port): dead_pid for port in everything}))
    assert len(ports.free_ports(2)) == 2
    assert len(json.loads(registry.read_text())) == 2, "the dead process's reservations are dropped"


def test_a_port_in_use_is_not_bindable() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        assert not ports._bindable(taken)
