"""CPU time, resident memory and thread counts of a server's whole process tree, from /proc."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    return text[text.rindex(")") + 2 :].split()


def tree(root: int) -> list[int]:
    """`root` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of the processes (their own threads, not reaped children)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields:
            total += int(fields[21]) * PAGE_SIZE
    return total


def pss_bytes(pids: list[int]) -> int:
    """Proportional set size: shared pages (libraries, shared memory) divided among sharers."""
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1]) * 1024
    return total


def threads(pids: list[int]) -> dict[int, tuple[str, int]]:
    """pid -> (command name, thread count)."""
    out = {}
    for pid in pids:
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            count = len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
        out[pid] = (comm, count)
    return out


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: everything but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLOCK_TICKS


@dataclass
class TreeSample:
    """CPU seconds of a process tree between `start` and `stop` (processes may come and go)."""

    roots: tuple[int, ...]
    _cpu0: dict[int, float] | None = None
    _t0: float = 0.0
    _busy0: float = 0.0
    cores: float = 0.0
    machine_cores: float = 0.0
    """Cores busy on the whole machine (server, load generator, and anything else running)."""
    rss: int = 0
    pss: int = 0
    thread_total: int = 0
    processes: int = 0

    def _per_pid(self) -> dict[int, float]:
        return {pid: cpu_seconds([pid]) for root in self.roots for pid in tree(root)}

    def start(self) -> None:
        self._cpu0, self._t0, self._busy0 = self._per_pid(), time.monotonic(), machine_busy_seconds()

    def stop(self) -> None:
        """Average cores used since `start`, and the tree's RSS and threads now (under load)."""
        assert self._cpu0 is not None
        now, elapsed = self._per_pid(), time.monotonic() - self._t0
        used = sum(cpu - self._cpu0.get(pid, 0.0) for pid, cpu in now.items())
        self.cores = used / elapsed if elapsed > 0 else 0.0
        self.machine_cores = (machine_busy_seconds() - self._busy0) / elapsed if elapsed > 0 else 0.0
        pids = list(now)
        self.rss = rss_bytes(pids)
        self.pss = pss_bytes(pids)
        counts = threads(pids)
        self.thread_total = sum(c for _, c in counts.values())
        self.processes = len(counts)


def thread_report(roots: tuple[int, ...]) -> str:
    """One line per process of the trees: pid, name, threads (shown in the benchmark output)."""
    lines = []
    for root in roots:
        for pid, (comm, count) in sorted(threads(tree(root)).items()):
            lines.append(f"{pid:>8} {comm:<28} {count:>4} threads")
    return "\n".join(lines)
