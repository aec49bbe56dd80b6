"""bench.cpu_profile: the per-request CPU split reads /proc and Triton's statistics correctly."""

from __future__ import annotations

import subprocess
import sys

from bench import cpu_profile

BUSY_CHILD = "import sys\nsum(i * i for i in range(2_000_000))\nprint('done', flush=True)\nsys.stdin.read()"
"""A process without children (the test session may have some: a Docker engine) that spends CPU."""


def _stats(requests: int, executions: int, ns: int) -> dict[str, object]:
    stage = {"ns": str(ns), "count": str(requests)}
    return {
        "inference_count": str(requests),
        "execution_count": str(executions),
        "inference_stats": {s: stage for s in ("queue", "compute_input", "compute_infer", "compute_output")},
    }


def test_stat_delta_is_the_difference_of_two_reads() -> None:
    delta = cpu_profile._stat_delta(_stats(10, 5, 1_000), _stats(30, 7, 9_000))
    assert delta == {
        "requests": 20.0,
        "executions": 2.0,
        "queue": 8_000.0,
        "compute_input": 8_000.0,
        "compute_infer": 8_000.0,
        "compute_output": 8_000.0,
    }


def test_snapshot_splits_the_root_process_by_thread_name() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", BUSY_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "done\n"
        spent = cpu_profile.snapshot(child.pid)
    finally:
        child.kill()
        child.wait()
    assert spent, "no thread of the process was read"
    assert all(name.startswith("tritonserver [") for name in spent), spent
    assert sum(spent.values()) > 0
